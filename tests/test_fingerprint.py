"""Device fingerprints tell an AMD EPYC from an Intel Xeon with VNNI + AMX, and refuse foreign predictors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nasq.cli.main import main
from nasq.errors import CheckpointError
from nasq.latency.dataset import sample_blocks
from nasq.latency.fingerprint import (cpu_info, device_fingerprint, fingerprint_id, fingerprint_mismatch,
                                      parse_cpuinfo)
from nasq.latency.predictor import FORMAT_VERSION, LatencyPredictor

# First lines of /proc/cpuinfo on two cloud machines (flags shortened to the interesting part).
AMD_EPYC = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC
stepping	: 1
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes vpclmulqdq

processor	: 1
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC
stepping	: 1
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes vpclmulqdq
"""
INTEL_SPR = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Processor
stepping	: 8
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512bw avx512vl \
avx512_bf16 avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
"""
# The same masked model name on an older Xeon (Cascade Lake: VNNI, no AMX, no AVX-VNNI).
INTEL_CLX = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 85
model name	: Intel(R) Xeon(R) Processor
stepping	: 7
flags		: fpu sse sse2 fma avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni
"""


def test_cpuinfo_is_parsed_into_identity_and_int8_flags():
    amd, intel = parse_cpuinfo(AMD_EPYC), parse_cpuinfo(INTEL_SPR)
    assert (amd["cpu_vendor"], amd["cpu_family"], amd["cpu_model_number"], amd["cpu_stepping"]) == \
        ("AuthenticAMD", "25", "1", "1")
    assert amd["cpu_flags"] == ["avx2", "fma"]
    assert (intel["cpu_vendor"], intel["cpu_family"], intel["cpu_model_number"], intel["cpu_stepping"]) == \
        ("GenuineIntel", "6", "143", "8")
    int8_flags = {"avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "avx512f", "avx512bw"}
    assert int8_flags <= set(intel["cpu_flags"])


def test_amd_and_intel_fingerprints_differ_and_the_mismatch_names_what():
    amd = device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(AMD_EPYC))
    intel = device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(INTEL_SPR))
    assert amd["fingerprint_id"] != intel["fingerprint_id"]
    diff = fingerprint_mismatch(amd, intel)
    text = "; ".join(diff)
    assert "cpu_vendor: 'AuthenticAMD' != 'GenuineIntel'" in diff
    assert "cpu_model_number: '1' != '143'" in diff
    flags = next(d for d in diff if d.startswith("cpu_flags"))
    assert "amx_int8" in flags and "avx512_vnni" in flags and "avx_vnni" in flags
    assert "engine" not in [d.split(":")[0] for d in diff] and "threads" not in text


def test_masked_model_name_still_tells_xeon_generations_apart():
    spr = device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(INTEL_SPR))
    clx = device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(INTEL_CLX))
    assert spr["cpu_model"] == clx["cpu_model"]  # the hypervisor shows one name for both
    diff = fingerprint_mismatch(spr, clx)
    assert {d.split(":")[0] for d in diff} == {"cpu_model_number", "cpu_stepping", "cpu_flags"}
    flags = next(d for d in diff if d.startswith("cpu_flags"))
    assert flags == ("cpu_flags: avx_vnni, avx512_bf16, amx_tile, amx_int8, amx_bf16 only in expected; "
                     "none only in actual")


def test_this_machine_matches_itself_and_reads_its_own_cpuinfo():
    here = device_fingerprint("ort-int8", 1)
    assert fingerprint_mismatch(here, device_fingerprint("ort-int8", 1)) == []
    assert here["fingerprint_id"] == fingerprint_id(here)
    info = cpu_info()
    assert here["cpu_vendor"] == info["cpu_vendor"] and here["cpu_flags"] == info["cpu_flags"]
    with open("/proc/cpuinfo") as f:
        text = f.read()
    vendor = next(line.split(":")[1].strip() for line in text.splitlines() if line.startswith("vendor_id"))
    assert here["cpu_vendor"] == vendor
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())
    assert here["avx512_vnni"] == ("avx512_vnni" in flags)
    assert ("amx_int8" in here["cpu_flags"]) == ("amx_int8" in flags)


def _predictor_for(cpuinfo_text: str) -> LatencyPredictor:
    specs = sample_blocks("tiny", 12, seed=2)
    y = np.linspace(0.01, 0.05, len(specs))
    fp = device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(cpuinfo_text))
    return LatencyPredictor.fit(specs, y, engine="ort-int8", fingerprint=fp, correction=False)


@pytest.mark.parametrize("built_on, used_on", [(AMD_EPYC, INTEL_SPR), (INTEL_SPR, AMD_EPYC)])
def test_predictor_built_on_one_cpu_is_refused_on_the_other(tmp_path, built_on, used_on):
    path = tmp_path / "p.json"
    _predictor_for(built_on).save(path)
    there = device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(used_on))
    with pytest.raises(CheckpointError) as err:
        LatencyPredictor.load(path, fingerprint=there)
    msg = str(err.value)
    assert "\n" not in msg and "cpu_vendor" in msg and "amx_int8" in msg
    assert "only in the file" in msg and "only in this machine" in msg
    assert "--allow-foreign" in msg and "allow_foreign=True" in msg
    LatencyPredictor.load(path, fingerprint=device_fingerprint("ort-int8", 1, cpu=parse_cpuinfo(built_on)))
    LatencyPredictor.load(path, fingerprint=there, allow_foreign=True)


def test_cli_refusal_names_the_flag_and_the_flag_works(tmp_path, capsys):
    path = tmp_path / "intel.json"
    _predictor_for(INTEL_SPR).save(path)  # this test machine is not that Xeon
    key = sample_blocks("tiny", 12, seed=2)[0].key()
    built_on = json.loads(path.read_text())["fingerprint"]
    if fingerprint_mismatch(built_on, device_fingerprint("ort-int8", 1)) == []:
        pytest.skip("this machine is the fixture's Xeon")
    assert main(["latency", "predict", "--predictor", str(path), key]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-foreign" in err[0]
    assert main(["latency", "predict", "--predictor", str(path), "--allow-foreign", key]) == 0


def test_old_predictor_file_is_refused_with_rebuild_message(tmp_path):
    path = tmp_path / "old.json"
    _predictor_for(AMD_EPYC).save(path)
    doc = json.loads(path.read_text())
    doc["format_version"] = FORMAT_VERSION - 1
    for key in ("fingerprint_version", "cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping"):
        doc["fingerprint"].pop(key)
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as err:
        LatencyPredictor.load(path, allow_foreign=True)
    msg = str(err.value)
    assert "\n" not in msg and "rebuild the predictor" in msg
    assert "nasq latency build --engine ort-int8" in msg
    assert "ISA flags" in msg
