"""Device fingerprints: which CPU, engine and settings a latency table was measured with (SpaceEvo Sec. 4).

INT8 latency depends on the CPU's integer dot-product instructions (AVX2, AVX-512 VNNI, AVX-VNNI, AMX on
x86; dot-product and i8mm on Arm), the microarchitecture (vendor, family, model, stepping), the engine and
its version, the thread count and the activation/weight types, so every measurement carries a fingerprint
and tables from different devices never mix silently. A hypervisor often masks the model name ("Intel(R)
Xeon(R) Processor" covers Cascade Lake and Sapphire Rapids alike), so the numeric identity and the ISA
flags are part of the fingerprint, not only the name. :func:`fingerprint_id` hashes the identity fields;
:func:`fingerprint_mismatch` names the fields (and the ISA flags) that differ.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from pathlib import Path

#: Version of the fingerprint layout; 2 added vendor/family/model/stepping and the INT8 ISA flags.
FINGERPRINT_VERSION = 2
#: CPU flags (as Linux ``/proc/cpuinfo`` spells them) that change the integer/float kernels ONNX Runtime
#: (MLAS) and XNNPACK pick: AVX2/FMA, AVX-512 (F, BW, VL), the VNNI variants (512-bit, VEX, INT8), AMX
#: tiles with INT8/BF16, and Arm's dot-product / int8 matrix-multiply extensions.
CPU_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                              "avx_vnni_int8", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
                              "asimddp", "i8mm", "sve")
#: Fields that identify a device/engine configuration; anything else in a fingerprint is informative.
IDENTITY_FIELDS: tuple[str, ...] = ("fingerprint_version", "cpu_vendor", "cpu_family", "cpu_model_number",
                                    "cpu_stepping", "cpu_model", "cpu_flags", "machine", "engine",
                                    "engine_version", "threads", "activation_type", "weight_type")
#: ``/proc/cpuinfo`` keys of the numeric CPU identity: x86 names first, then their Arm counterparts.
_CPUINFO_KEYS: dict[str, tuple[str, ...]] = {
    "cpu_vendor": ("vendor_id", "CPU implementer"), "cpu_family": ("cpu family", "CPU architecture"),
    "cpu_model_number": ("model", "CPU part"), "cpu_stepping": ("stepping", "CPU revision"),
    "cpu_model": ("model name", "Model name"),
}


def parse_cpuinfo(text: str) -> dict:
    """CPU identity and INT8-relevant ISA flags from the text of a Linux ``/proc/cpuinfo``.

    Only the first processor block is read (all cores of one machine are alike). Missing fields are
    ``None``; ``cpu_flags`` lists the flags of :data:`CPU_FLAGS` the CPU has, in that order.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # end of the first processor block
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    out: dict = {key: next((fields[k] for k in names if fields.get(k)), None)
                 for key, names in _CPUINFO_KEYS.items()}
    out["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
    return out


@functools.lru_cache(maxsize=4)
def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """This machine's CPU identity (:func:`parse_cpuinfo`) plus its logical CPU count."""
    p = Path(path)
    info = parse_cpuinfo(p.read_text(errors="replace")) if p.exists() else parse_cpuinfo("")
    info["cpu_model"] = info["cpu_model"] or platform.processor() or "unknown"
    info["n_cpus"] = os.cpu_count() or 1
    return info


def engine_version(engine: str) -> str:
    """Version string of the runtime behind ``engine`` (LiteRT's for ``tflite-*``)."""
    if engine.startswith("ort"):
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    from nasq.latency.engines import tflite_runtime

    return tflite_runtime()[1]


def device_fingerprint(engine: str, threads: int, activation_type: str | None = None,
                       weight_type: str | None = None, *, cpu: dict | None = None) -> dict:
    """Fingerprint of this machine for ``engine`` (SpaceEvo Sec. 4: per-device latency predictors).

    Args:
        engine: engine name, e.g. ``ort-int8``.
        threads: intra-op threads used for timing.
        activation_type: ``uint8``/``int8``/``float32``; defaults to the engine's default.
        weight_type: ``int8``/``float32``; defaults to the engine's default.
        cpu: CPU identity as :func:`parse_cpuinfo` returns it (default: this machine's :func:`cpu_info`).

    Returns:
        A JSON-ready dict with the identity fields of :data:`IDENTITY_FIELDS` plus ``n_cpus``,
        ``avx512_vnni``, ``python`` and ``fingerprint_id``.
    """
    from nasq.latency.engines import resolve_engine

    cfg = resolve_engine(engine, activation_type)
    info = cpu_info() if cpu is None else cpu
    flags = list(info.get("cpu_flags", []))
    fp = {"fingerprint_version": FINGERPRINT_VERSION}
    fp.update({key: info.get(key) for key in _CPUINFO_KEYS})
    fp.update({
        "cpu_flags": flags, "avx512_vnni": "avx512_vnni" in flags,
        "machine": platform.machine(), "n_cpus": info.get("n_cpus", os.cpu_count() or 1),
        "engine": cfg.family + "-" + cfg.precision, "engine_version": engine_version(engine),
        "threads": int(threads), "activation_type": cfg.activation_type,
        "weight_type": weight_type or cfg.weight_type, "python": platform.python_version(),
    })
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict) -> str:
    """Short stable hash of a fingerprint's identity fields (equal ids = comparable latency tables)."""
    ident = {k: fp.get(k) for k in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_mismatch(expected: dict, actual: dict,
                         labels: tuple[str, str] = ("expected", "actual")) -> list[str]:
    """Identity fields whose values differ (empty if none).

    Scalars read ``field: expected != actual``; the ISA flags name each flag present on one side only,
    e.g. ``cpu_flags: amx_int8, avx512_vnni only in expected; none only in actual`` (``labels`` names
    the two sides).
    """
    out = []
    for k in IDENTITY_FIELDS:
        want, got = expected.get(k), actual.get(k)
        if want == got:
            continue
        if k == "cpu_flags" and isinstance(want, list) and isinstance(got, list):
            only_want = ", ".join(f for f in want if f not in got) or "none"
            only_got = ", ".join(f for f in got if f not in want) or "none"
            out.append(f"cpu_flags: {only_want} only in {labels[0]}; {only_got} only in {labels[1]}")
        else:
            out.append(f"{k}: {want!r} != {got!r}")
    return out


def load_average() -> tuple[float, float, float]:
    """System load average over 1, 5 and 15 minutes (recorded with every measurement)."""
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - platforms without getloadavg
        return (float("nan"),) * 3
