"""A tiny accuracy table built on digits through real Ray: a failing part, resume, LUT directory format."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from test_bkd_table import assert_table_is_plausible

from nasq.bkd.build import build_lut, part_paths
from nasq.errors import CheckpointError, ConfigError, NasqError
from nasq.settings import LutSettings
from nasq.spaces.spaceevo import space_from_name
from nasq.spaces.spaceevo_subnet import setting_key

TYPES = ("mbv1", "fused_mb")
# 40 fp32 steps on a 30-step teacher: the fewest tried (3, 12, 20, 40) whose table is ordered by capacity
# (with 3 steps every student is worse than zeros, NSR 15-130, and the largest setting is the worst)
TINY = dict(hyperspace="spaceevo-tiny", block_types=TYPES, teacher_type="mbv1", teacher_steps=30, steps=40,
            qat_steps=2, batch_size=16, eval_examples=24, bn_batches=1, mixed_rows=2, data_limit=300)
TINY_H = space_from_name("spaceevo-tiny").hyperspace


def _expected_rows(stage: int, t: str) -> int:
    h = space_from_name("spaceevo-tiny").hyperspace
    ins = len(h.widths[stage - 1]) if stage else 1
    return ins * len(h.depths) * len(h.widths[stage]) * len(h.kernels) * len(h.expands_of(t)) + 2


@pytest.mark.ray
def test_tiny_lut_build_resumes_after_a_failed_part(ray_session, tmp_path):
    settings = LutSettings(**TINY)
    out = tmp_path / "lut"
    blocked, _ = part_paths(out, 1, "fused_mb")
    blocked.mkdir(parents=True)  # a folder where the part's CSV goes: its task fails for real (EISDIR)
    with pytest.raises(NasqError, match=r"1 of 6 .*1:fused_mb"):
        build_lut(settings, out)
    done = {(i, t): part_paths(out, i, t)[1] for i in range(3) for t in TYPES}
    assert not done[(1, "fused_mb")].exists() and not (out / "lut.csv").exists()
    before = {k: p.read_text() for k, p in done.items() if k != (1, "fused_mb")}
    assert len(before) == 5

    shutil.rmtree(blocked)
    report = build_lut(settings, out)
    assert report.trained == ("1:fused_mb",) and len(report.skipped) == 5
    assert {k: done[k].read_text() for k in before} == before  # finished parts were not re-run

    with open(out / "lut.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["stage", "block_type", "setting", "nsr_fp32", "nsr_int8", "flops", "params"]
    for (i, t) in done:
        part = [r for r in rows if r["stage"] == str(i) and r["block_type"] == t]
        assert len(part) == _expected_rows(i, t)
        for r in part:
            assert 0 < float(r["nsr_fp32"]) < math.inf and 0 < float(r["nsr_int8"]) < math.inf
            assert int(r["flops"]) > 0 and int(r["params"]) > 0
    # the numbers mean something (thresholds: assert_table_is_plausible; seen on this build: the largest
    # setting beats the smallest in 6 of 6 pairs, mean log(small / large) 0.26, Spearman(params, fp32 NSR)
    # -0.39 (a shuffled loss column: about -0.0), int8 NSR 0.2 % above fp32 on average, never equal)
    assert_table_is_plausible(rows, TINY_H)
    smallest = [r for r in rows if r["stage"] == "0" and r["block_type"] == "mbv1"]
    assert {r["setting"] for r in smallest} >= {setting_key([8, 1, 8, 0, 3, 0, 1, 0]),
                                                 setting_key([8, 2, 24, 24, 5, 5, 1, 1])}
    meta = json.loads((out / "lut.json").read_text())
    assert meta["format"] == "nasq.accuracy-lut" and meta["version"] == 1
    assert meta["hyperspace"] == "spaceevo-tiny" and meta["resolution"] == 16
    assert set(meta["seconds"]) == {f"{i}:{t}" for i, t in done} and all(
        s > 0 for s in meta["seconds"].values())
    assert meta["teacher"]["source"] == "trained" and meta["estimator"] == "ridge-capacity-v1"
    held_out = meta["uniform_mean_error"]["parts"]
    assert set(held_out) == set(meta["seconds"]) and all(
        e["int8"]["rows"] == 2 and math.isfinite(e["int8"]["mean_rel_error"]) for e in held_out.values())

    from nasq.bkd.table import AccuracyLUT  # the reader of the LUT directory format

    lut = AccuracyLUT.load(out)
    cand = space_from_name("spaceevo-tiny").candidate("mbv1:8-16|fused_mb:16-24|mbv1:24-32")
    batch = cand.sample_subnets(50, np.random.default_rng(0))
    for i, st in enumerate(cand.stages):
        losses = lut.stage_losses(i, st.type, cand.stage_settings(batch, i))
        assert losses.shape == (50,) and np.isfinite(losses).all() and (losses > 0).all()

    with pytest.raises(CheckpointError, match="other settings"):
        build_lut(LutSettings(**{**TINY, "steps": 4}), out)


def test_lut_settings_bad_inputs_are_one_line(tmp_path):
    for kw, match in ((dict(hyperspace="nope"), "hyperspace"), (dict(block_types="mbv9"), "block_types"),
                      (dict(steps=0), "steps"), (dict(dataset="mnist"), "data set"),
                      (dict(lr=-1.0), "lr")):
        with pytest.raises(ConfigError, match=match) as err:
            LutSettings(**kw)
        assert "\n" not in str(err.value)
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="teacher checkpoint"):
        LutSettings(hyperspace="spaceevo-tiny", teacher_checkpoint=str(bad)).check()


@pytest.mark.slow
@pytest.mark.ray
def test_killed_cli_build_resumes_without_retraining_finished_parts(ray_session, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "lut"
    flags = [f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    env = {**os.environ, "NASQ_RAY_NUM_CPUS": "2", "NASQ_RAY_DASHBOARD": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "nasq.cli.main", "lut", "build", *flags, "--out", str(out)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    markers = lambda: sorted((out / "parts").glob("*.done.json")) if (out / "parts").is_dir() else []  # noqa
    deadline = time.monotonic() + 400
    while not markers() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session, mid-build
    proc.wait()
    time.sleep(1.0)
    before = {p.name: p.read_text() for p in markers()}
    assert 1 <= len(before) < 6 and not (out / "lut.csv").exists()

    report = build_lut(LutSettings(**TINY), out)
    assert len(report.skipped) >= len(before) and len(report.trained) == 6 - len(report.skipped)
    assert {n: (out / "parts" / n).read_text() for n in before} == before
    with open(out / "lut.csv", newline="") as f:
        assert_table_is_plausible(list(csv.DictReader(f)), TINY_H)  # the resumed table is a sound one too


def test_cli_lut_build_bad_inputs_fail_as_one_line_before_ray(tmp_path, capsys):
    from nasq.cli.main import main

    for argv, match in ((["--data", "mnist"], "unknown data set"), (["--steps", "0"], "steps"),
                        (["--hyperspace", "spaceevo-huge"], "hyperspace"),
                        (["--teacher-checkpoint", str(tmp_path / "none.pt")], "teacher-checkpoint")):
        assert main(["lut", "build", *argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and "\n" not in err and err.startswith("nasq: error:")
    assert not (tmp_path / "out").exists()
