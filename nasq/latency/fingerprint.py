"""Device fingerprints: which CPU, engine and settings a latency table was measured with (SpaceEvo Sec. 4).

INT8 latency depends on the CPU's integer dot-product instructions (AVX-512 VNNI here), the engine and its
version, the thread count and the activation/weight types, so every measurement carries a fingerprint and
tables from different devices never mix silently. :func:`fingerprint_id` hashes the identity fields;
:func:`fingerprint_mismatch` names the fields that differ.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from pathlib import Path

#: CPU flags that decide integer/float kernel choice in ONNX Runtime (MLAS) and XNNPACK.
CPU_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                              "avx512_bf16", "amx_int8")
#: Fields that identify a device/engine configuration; anything else in a fingerprint is informative.
IDENTITY_FIELDS: tuple[str, ...] = ("cpu_model", "cpu_flags", "machine", "engine", "engine_version",
                                    "threads", "activation_type", "weight_type")


@functools.lru_cache(maxsize=1)
def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """CPU model name, relevant instruction-set flags and logical CPU count (Linux ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or "unknown", set()
    p = Path(path)
    if p.exists():
        for line in p.read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name == "model name" and model in ("unknown", platform.processor()):
                model = value.strip()
            elif name == "flags" and not flags:
                flags = set(value.split())
    return {"cpu_model": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "n_cpus": os.cpu_count() or 1}


def engine_version(engine: str) -> str:
    """Version string of the runtime behind ``engine`` (imports TensorFlow only for ``tflite-*``)."""
    if engine.startswith("ort"):
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    from nasq.latency.engines import tflite_runtime

    return tflite_runtime()[1]


def device_fingerprint(engine: str, threads: int, activation_type: str | None = None,
                       weight_type: str | None = None) -> dict:
    """Fingerprint of this machine for ``engine`` (SpaceEvo Sec. 4: per-device latency predictors).

    Args:
        engine: engine name, e.g. ``ort-int8``.
        threads: intra-op threads used for timing.
        activation_type: ``uint8``/``int8``/``float32``; defaults to the engine's default.
        weight_type: ``int8``/``float32``; defaults to the engine's default.

    Returns:
        A JSON-ready dict with the identity fields of :data:`IDENTITY_FIELDS` plus ``n_cpus``,
        ``python`` and ``fingerprint_id``.
    """
    from nasq.latency.engines import resolve_engine

    cfg = resolve_engine(engine, activation_type)
    info = cpu_info()
    fp = {
        "cpu_model": info["cpu_model"], "cpu_flags": info["cpu_flags"],
        "avx512_vnni": "avx512_vnni" in info["cpu_flags"], "machine": platform.machine(),
        "n_cpus": info["n_cpus"], "engine": cfg.family + "-" + cfg.precision,
        "engine_version": engine_version(engine), "threads": int(threads),
        "activation_type": cfg.activation_type, "weight_type": weight_type or cfg.weight_type,
        "python": platform.python_version(),
    }
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict) -> str:
    """Short stable hash of a fingerprint's identity fields (equal ids = comparable latency tables)."""
    ident = {k: fp.get(k) for k in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_mismatch(expected: dict, actual: dict) -> list[str]:
    """Identity fields whose values differ, formatted ``field: expected != actual`` (empty if equal)."""
    return [f"{k}: {expected.get(k)!r} != {actual.get(k)!r}" for k in IDENTITY_FIELDS
            if expected.get(k) != actual.get(k)]


def load_average() -> tuple[float, float, float]:
    """System load average over 1, 5 and 15 minutes (recorded with every measurement)."""
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - platforms without getloadavg
        return (float("nan"),) * 3
