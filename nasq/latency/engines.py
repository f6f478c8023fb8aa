"""Inference engines for latency measurement: ONNX Runtime (FP32, INT8 QDQ) and TFLite (FP32, full INT8).

SpaceEvo (Sec. 4) measures INT8 latency on real devices with the deployment engine. Here:

- ``ort-fp32`` / ``ort-int8``: PyTorch blocks exported to ONNX (opset 17, eval mode so BatchNorm folds into
  the convs), INT8 by ``onnxruntime.quantization.quantize_static`` in QDQ format with per-channel int8
  weights and MinMax calibration on random inputs. The default activation type is **uint8 (U8S8)**: x86
  VNNI's ``vpdpbusd`` multiplies unsigned by signed bytes, ONNX Runtime's MLAS has its fast kernels for
  U8S8, and on this project's CPU U8S8 blocks ran 2-4x faster than the QDQ default S8S8, which leaves many
  ops in FP32 (/work/shared/measurements/int8-onnxruntime-cpu.md). ``ort-int8-s8s8`` selects S8S8.
- ``tflite-fp32`` / ``tflite-int8``: the Keras twin converted by ``TFLiteConverter`` (full-integer INT8 with
  int8 input/output and a representative data set), run by the LiteRT interpreter of the ``ai-edge-litert``
  package with XNNPACK. TensorFlow is used only for the converter: 2.21 deprecates ``tf.lite.Interpreter``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from nasq.errors import ConfigError, bad_token

log = logging.getLogger(__name__)
ENGINES: tuple[str, ...] = ("ort-int8", "ort-fp32", "tflite-int8", "tflite-fp32")
#: Named variants of ``ort-int8`` with the activation type spelled out.
ENGINE_VARIANTS: dict[str, tuple[str, str]] = {"ort-int8-u8s8": ("ort-int8", "uint8"),
                                               "ort-int8-s8s8": ("ort-int8", "int8")}
OPSET = 17


@dataclass(frozen=True)
class EngineConfig:
    """Resolved engine settings: runtime family, precision and tensor types."""

    family: str            # "ort" | "tflite"
    precision: str         # "fp32" | "int8"
    activation_type: str   # "float32" | "uint8" | "int8"
    weight_type: str       # "float32" | "int8"

    @property
    def name(self) -> str:
        """Canonical engine name, e.g. ``ort-int8``."""
        return f"{self.family}-{self.precision}"


def resolve_engine(engine: str, activation_type: str | None = None) -> EngineConfig:
    """Validate an engine name (or variant) and an optional activation type into an EngineConfig.

    Raises:
        ConfigError: unknown engine or an activation type the engine cannot use.
    """
    if engine in ENGINE_VARIANTS:
        engine, variant_act = ENGINE_VARIANTS[engine]
        if activation_type not in (None, variant_act):
            raise ConfigError(f"engine variant fixes activation type {variant_act!r}, got {activation_type!r}")
        activation_type = variant_act
    if engine not in ENGINES:
        raise ConfigError(bad_token("engine", engine, list(ENGINES) + list(ENGINE_VARIANTS)))
    family, precision = engine.split("-")
    if precision == "fp32":
        allowed, default = ("float32",), "float32"
    elif family == "ort":
        allowed, default = ("uint8", "int8"), "uint8"
    else:
        allowed, default = ("int8",), "int8"
    act = activation_type or default
    if act not in allowed:
        raise ConfigError(bad_token(f"activation type for {engine}", act, list(allowed)))
    return EngineConfig(family, precision, act, "float32" if precision == "fp32" else "int8")


# --------------------------------------------------------------------------- ONNX Runtime


def export_onnx(module, shape: Sequence[int], path: str | Path) -> Path:
    """Export a PyTorch module in eval mode to ONNX (opset 17; BatchNorm folded into convs)."""
    import torch

    import onnx

    path = Path(path)
    module = randomize_batchnorm(module.eval())
    with torch.no_grad():
        torch.onnx.export(module, (torch.zeros(*shape),), str(path), opset_version=OPSET, dynamo=False,
                          input_names=["x"], output_names=["y"], do_constant_folding=True)
    model = onnx.load(str(path))
    if _inline_initializer_identities(model.graph):
        onnx.save(model, str(path))
    return path


def randomize_batchnorm(module, seed: int = 0):
    """Give every BatchNorm non-trivial statistics, so folded conv weights and biases look trained.

    Freshly initialised BN folds to zero biases, which the exporter deduplicates into shared tensors; the
    quantizer then cannot quantize those biases. Returns ``module`` (modified in place).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return module


def _inline_initializer_identities(graph) -> int:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer; return how many."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    drop = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits]
    for node in drop:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]),
                                                         node.output[0]))
        graph.node.remove(node)
    return len(drop)


class RandomCalibrationReader(CalibrationDataReader):
    """Calibration data for ``quantize_static``: ``n`` seeded standard-normal inputs of a fixed shape."""

    def __init__(self, input_name: str, shape: Sequence[int], n: int = 8, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self._data = [{input_name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]
        self._it = iter(self._data)

    def get_next(self) -> dict | None:
        """Next calibration feed dict, or None at the end (CalibrationDataReader protocol)."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Restart from the first sample."""
        self._it = iter(self._data)


def onnx_input(path: str | Path) -> tuple[str, tuple[int, ...]]:
    """Name and static shape of an ONNX model's first input (ConfigError if the shape is dynamic)."""
    import onnx

    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"ONNX model {path} has a dynamic input shape; export it with a fixed shape")
    return inp.name, dims


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, activation_type: str = "uint8",
                  calib_samples: int = 8, seed: int = 0) -> Path:
    """Static INT8 quantization in QDQ format, per-channel int8 weights, MinMax calibration (Sec. 4)."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    name, shape = onnx_input(fp32_path)
    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activation_type]
    reader = RandomCalibrationReader(name, shape, calib_samples, seed)
    with _quiet_root_logger():
            quantize_static(str(fp32_path), str(int8_path), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return Path(int8_path)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop onnxruntime.quantization's advice to pre-process (it logs on the root logger every call)."""
    def drop(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def ort_runner(path: str | Path, threads: int = 1) -> Callable[[], None]:
    """A zero-argument function running one inference of an ONNX model with IOBinding.

    The session uses ``threads`` intra-op threads, one inter-op thread and sequential execution; input and
    output stay bound on the CPU, so a call times only ``run_with_iobinding``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name, shape = onnx_input(path)
    x = ort.OrtValue.ortvalue_from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    binding = sess.io_binding()
    binding.bind_ortvalue_input(name, x)
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")

    def run() -> None:
        sess.run_with_iobinding(binding)

    run.session = sess  # type: ignore[attr-defined]  # keep alive with the closure, for inspection
    return run


# --------------------------------------------------------------------------- TFLite


def tflite_runtime() -> tuple[type, str]:
    """The LiteRT interpreter class of ``ai_edge_litert`` and its version string.

    TensorFlow 2.21 deprecates ``tf.lite.Interpreter`` in favour of the ``ai-edge-litert`` package (the
    same XNNPACK-delegated kernels), so TFLite models are timed with LiteRT and TensorFlow only converts.

    Raises:
        ConfigError: ``ai-edge-litert`` is not installed, naming what to install.
    """
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        raise ConfigError("the tflite-* engines run on the LiteRT interpreter; install it with "
                          "`pip install ai-edge-litert` (or `pip install nasq[tflite]`)") from None
    from importlib.metadata import version

    return litert.Interpreter, f"ai_edge_litert {version('ai-edge-litert')}"


def convert_tflite(specs: Sequence, int8: bool, batch: int = 1, seed: int = 0, calib_samples: int = 8) -> bytes:
    """Convert the Keras twin of a chain to TFLite; ``int8`` = full-integer (int8 in/out, representative data)."""
    from nasq.blocks.keras_blocks import build_keras_chain, keras

    keras()
    import tensorflow as tf

    model = build_keras_chain(specs, batch=batch)
    shape = tuple(int(d) for d in model.inputs[0].shape)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(seed)
        samples = [rng.standard_normal(shape).astype(np.float32) for _ in range(calib_samples)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s] for s in samples)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return conv.convert()


def tflite_interpreter(content: bytes, threads: int = 1):
    """An allocated TFLite interpreter with ``threads`` threads (default XNNPACK delegate)."""
    cls, _ = tflite_runtime()
    interp = cls(model_content=content, num_threads=int(threads))
    interp.allocate_tensors()
    return interp


def tflite_runner(content: bytes, threads: int = 1) -> Callable[[], None]:
    """A zero-argument function running one inference; the input is set once, a call times ``invoke``."""
    interp = tflite_interpreter(content, threads)
    det = interp.get_input_details()[0]
    x = np.random.default_rng(0).standard_normal(det["shape"])
    if det["dtype"] == np.int8:
        x = np.clip(np.round(x * 32), -128, 127)
    interp.set_tensor(det["index"], x.astype(det["dtype"]))

    def run() -> None:
        interp.invoke()

    run.interpreter = interp  # type: ignore[attr-defined]
    return run
