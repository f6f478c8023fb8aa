"""Measure the latency of block chains and ONNX files on this CPU (SpaceEvo Sec. 4, measured ground truth).

A chain of :class:`~nasq.blocks.spec.BlockSpec` is built (PyTorch for ``ort-*``, the Keras twin for
``tflite-*``), converted for the engine, and timed whole: warm-up runs, then ``repeats`` timed single
inferences, reported as median and interquartile range. The measuring thread is pinned to the least busy
CPU(s) while the session is created and timed, and the 1/5/15-minute load average is recorded, because a
busy neighbour core adds several percent of noise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from nasq.blocks.spec import BlockSpec, chain_key, check_chain
from nasq.errors import ConfigError
from nasq.latency import engines
from nasq.latency.engines import ENGINES, resolve_engine  # noqa: F401  (ENGINES re-exported)
from nasq.latency.fingerprint import device_fingerprint, load_average

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    """One timed model: latency statistics in milliseconds plus where and how it was measured."""

    key: str                    # chain key (block keys joined by '+') or ONNX file name
    engine: str                 # canonical engine name, e.g. "ort-int8"
    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int
    fingerprint: dict           # device_fingerprint(...) of the engine, threads and tensor types
    load_avg: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # before timing
    cpus: tuple[int, ...] = ()  # CPUs the process was pinned to while timing
    batch: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def iqr_ms(self) -> float:
        """Interquartile range of the timed repeats."""
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        """Rebuild from :meth:`to_dict` output."""
        d = dict(data)
        d["load_avg"], d["cpus"] = tuple(d.get("load_avg", ())), tuple(d.get("cpus", ()))
        return cls(**d)


def summarize(samples_ms: Sequence[float]) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile of timings."""
    p25, med, p75 = np.percentile(np.asarray(samples_ms, dtype=float), [25, 50, 75])
    return float(med), float(p25), float(p75)


def time_runner(run: Callable[[], None], repeats: int, warmup: int) -> np.ndarray:
    """Run ``warmup`` untimed then ``repeats`` individually timed calls; return milliseconds."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        run()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        run()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def _cpu_busy() -> dict[int, tuple[int, int]]:
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in vals]
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            busy[int(name[3:])] = (sum(v) - idle, sum(v))
    return busy


def pick_cpus(threads: int = 1, window_s: float = 0.05) -> tuple[int, ...]:
    """The ``threads`` least busy CPUs this process may run on, sampled over ``window_s`` seconds."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        return ()
    try:
        a = _cpu_busy()
        time.sleep(window_s)
        b = _cpu_busy()
        load = {c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in allowed if c in a and c in b}
    except OSError:
        load = {}
    return tuple(sorted(allowed, key=lambda c: (load.get(c, 0.0), -c))[:max(1, threads)])


@contextlib.contextmanager
def pinned(cpus: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Pin the calling thread to ``cpus`` for the block and restore its previous affinity afterwards.

    On Linux the affinity is per thread; ONNX Runtime and TFLite run single-threaded inference on the
    calling thread, and worker threads created inside the block (sessions with ``threads > 1``) inherit it.
    """
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield ()
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield tuple(cpus)
    finally:
        os.sched_setaffinity(0, before)


def _check_load(threads: int) -> tuple[float, float, float]:
    load = load_average()
    limit = (os.cpu_count() or 1) - threads + 0.5
    if load[0] > limit:
        log.warning("load average %.2f > %.1f: other processes compete for the CPU, timings will be noisy",
                    load[0], limit)
    return load


def prepare_artifact(specs: Sequence[BlockSpec], engine: str, workdir: str | Path, *, batch: int = 1,
                     activation_type: str | None = None, seed: int = 0) -> Path:
    """Build the chain and write the engine's model file (ONNX, or ``.tflite``) into ``workdir``."""
    cfg = resolve_engine(engine, activation_type)
    specs = list(specs)
    check_chain(specs)
    workdir = Path(workdir)
    shape = (batch, specs[0].cin, specs[0].resolution, specs[0].resolution)
    if cfg.family == "ort":
        from nasq.blocks.torch_blocks import build_chain

        fp32 = engines.export_onnx(build_chain(specs), shape, workdir / "model_fp32.onnx")
        if cfg.precision == "fp32":
            return fp32
        return engines.quantize_onnx(fp32, workdir / "model_int8.onnx", cfg.activation_type, seed=seed)
    path = workdir / f"model_{cfg.precision}.tflite"
    path.write_bytes(engines.convert_tflite(specs, int8=cfg.precision == "int8", batch=batch, seed=seed))
    return path


def make_runner(path: str | Path, engine: str, threads: int = 1) -> Callable[[], None]:
    """A zero-argument function running one inference of a prepared model file on ``engine``."""
    cfg = resolve_engine(engine)
    if cfg.family == "ort":
        return engines.ort_runner(path, threads)
    return engines.tflite_runner(Path(path).read_bytes(), threads)


def check_timing(threads: int, repeats: int, warmup: int) -> None:
    """Refuse thread and repeat counts that cannot time anything (one-line ConfigError)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1 (1 = the project's ground truth), "
                          f"got {threads!r}")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")


def time_model(path: str | Path, engine: str, key: str, *, threads: int = 1, repeats: int = 50,
               warmup: int = 10, batch: int = 1, activation_type: str | None = None,
               cpus: Sequence[int] | None = None) -> Measurement:
    """Pin, create the session, time it and wrap the result with fingerprint and load (Sec. 4)."""
    check_timing(threads, repeats, warmup)
    cfg = resolve_engine(engine, activation_type)
    cpus = tuple(cpus) if cpus is not None else pick_cpus(threads)
    with pinned(cpus) as used:
        run = make_runner(path, engine, threads)
        load = _check_load(threads)
        samples = time_runner(run, repeats, warmup)
    med, p25, p75 = summarize(samples)
    fp = device_fingerprint(engine, threads, cfg.activation_type)
    return Measurement(key, cfg.name, med, p25, p75, repeats, fp, load, used, batch)


def measure_specs(specs: Sequence[BlockSpec], engine: str, *, threads: int = 1, repeats: int = 50,
                  warmup: int = 10, batch: int = 1, activation_type: str | None = None,
                  cpus: Sequence[int] | None = None, seed: int = 0) -> Measurement:
    """Measure a chain of blocks whole on ``engine`` (SpaceEvo Sec. 4 block/model latency).

    Args:
        specs: blocks in order; consecutive blocks must fit (:func:`~nasq.blocks.spec.check_chain`).
        engine: one of :data:`~nasq.latency.engines.ENGINES` or a variant such as ``ort-int8-s8s8``.
        threads: intra-op threads (1 = the project's ground truth).
        repeats, warmup: timed and untimed inferences.
        batch: batch size of the input.
        activation_type: ``uint8`` (default) or ``int8`` for ``ort-int8``.
        cpus: CPUs to pin to; default the ``threads`` least busy ones.
        seed: seed of the calibration / representative data.
    """
    check_timing(threads, repeats, warmup)
    specs = [BlockSpec.from_key(s) if isinstance(s, str) else s for s in specs]
    with tempfile.TemporaryDirectory(prefix="nasq-measure-") as tmp:
        path = prepare_artifact(specs, engine, tmp, batch=batch, activation_type=activation_type, seed=seed)
        return time_model(path, engine, chain_key(specs), threads=threads, repeats=repeats, warmup=warmup,
                          batch=batch, activation_type=activation_type, cpus=cpus)


def measure_onnx(path: str | Path, engine: str, *, threads: int = 1, repeats: int = 50, warmup: int = 10,
                 activation_type: str | None = None, cpus: Sequence[int] | None = None) -> Measurement:
    """Measure an ONNX file on ``ort-fp32`` as is, or on ``ort-int8`` (quantized here unless it is already)."""
    check_timing(threads, repeats, warmup)
    cfg = resolve_engine(engine, activation_type)
    path = Path(path)
    if cfg.family != "ort":
        raise ConfigError(f"engine {engine!r} cannot run an ONNX file; use ort-fp32 or ort-int8")
    model = load_onnx(path)
    batch = engines.onnx_input(path)[1][0]
    try:
        return _measure_loaded(model, path, engine, cfg, threads=threads, repeats=repeats, warmup=warmup,
                               batch=batch, activation_type=activation_type, cpus=cpus)
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        reason = " ".join(str(exc).split())[:160]
        raise ConfigError(f"ONNX Runtime cannot run {path} ({type(exc).__name__}: {reason}); check the "
                          "model, or export it again") from exc


def load_onnx(path: str | Path):
    """Read and check an ONNX file: present, not empty, a valid model with one static-shaped input.

    Raises:
        ConfigError: one line naming what is wrong with the file and what to pass instead.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    fix = "pass an ONNX model exported with torch.onnx.export (fixed input shape)"
    if not path.exists():
        raise ConfigError(f"ONNX file {path} not found; pass the path of an exported .onnx model")
    if not path.is_file():
        raise ConfigError(f"{path} is a directory, not an ONNX file; {fix}")
    if path.stat().st_size == 0:
        raise ConfigError(f"ONNX file {path} is empty; {fix}")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ConfigError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {reason}); "
                          f"{fix}") from exc
    if not model.graph.input:
        raise ConfigError(f"ONNX model {path} has no inputs; {fix}")
    return model


def _measure_loaded(model, path: Path, engine: str, cfg, *, threads: int, repeats: int, warmup: int,
                    batch: int, activation_type: str | None, cpus: Sequence[int] | None) -> Measurement:
    """Time a checked ONNX model as is (fp32, or already quantized) or after INT8 quantization."""
    if cfg.precision == "fp32":
        return time_model(path, engine, path.name, threads=threads, repeats=repeats, warmup=warmup,
                          batch=batch, cpus=cpus)
    found = _qdq_activation_type(model)
    if found is not None:  # already quantized: time as is, record the activation type it really uses
        wanted = activation_type or engines.ENGINE_VARIANTS.get(engine, (None, None))[1]
        if wanted not in (None, found):
            raise ConfigError(f"{path} is already quantized with {found} activations, not {wanted}; "
                              "pass its FP32 model to quantize it again")
        return time_model(path, engine, path.name, threads=threads, repeats=repeats, warmup=warmup,
                          batch=batch, activation_type=found, cpus=cpus)
    with tempfile.TemporaryDirectory(prefix="nasq-measure-") as tmp:
        q = engines.quantize_onnx(path, Path(tmp) / "model_int8.onnx", cfg.activation_type)
        return time_model(q, engine, path.name, threads=threads, repeats=repeats, warmup=warmup,
                          batch=batch, activation_type=activation_type, cpus=cpus)


def _qdq_activation_type(model) -> str | None:
    """``uint8``/``int8`` from the first QuantizeLinear's zero point, or None for an unquantized graph."""
    from onnx import TensorProto

    inits = {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = inits.get(node.input[2]) if len(node.input) > 2 else TensorProto.UINT8
            return {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8"}.get(zp, "uint8")
    return None
