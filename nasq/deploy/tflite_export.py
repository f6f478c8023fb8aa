"""TFLite full-integer export of a trained SpaceEvo subnet (SpaceEvo §5 deployment, §4 TFLite INT8).

The static subnet of :meth:`nasq.supernet.model.Supernet.extract_subnet` (torch, NCHW) and the Keras
twin of the same :class:`~nasq.blocks.spec.BlockSpec` chain
(:func:`nasq.blocks.keras_blocks.build_keras_chain`, NHWC) hold the same layers. :func:`copy_weights`
pairs them by structure: both are built block by block in chain order and, inside a block, layer by
layer in creation order, so the k-th conv (depthwise conv, BatchNorm, dense layer) of the torch chain is
the k-th one created in the twin. Torch's module order is
its registration order; Keras's functional ``model.layers`` is sorted by graph depth (a bottleneck's
shortcut conv comes early), so the twin's creation order is read from Keras's auto-names, whose numeric
suffix counts up per layer class as layers are created. Every pair's shapes are checked.

:func:`export_tflite_int8` converts the twin (built with torch's padding) with TensorFlow's
``TFLiteConverter``: full-integer INT8, per-channel weights, activations calibrated on training images,
**int8 input and output**. Int8 I/O is the graph the ``tflite-int8`` latency engine measures (no float
QUANTIZE/DEQUANTIZE ops at the ends) and what integer-only accelerators accept; :func:`tflite_predict`
quantizes images and dequantizes logits on the host with the file's own scale and zero point, running
the LiteRT interpreter (``ai_edge_litert``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nasq.blocks.spec import BlockSpec
from nasq.errors import ConfigError

log = logging.getLogger(__name__)
#: Weight-bearing layer kinds: Keras class name -> kind (the torch side is classified by :func:`_torch_kind`).
_KERAS_KINDS: dict[str, str] = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise",
                                "BatchNormalization": "bn", "Dense": "dense"}
_UID = re.compile(r"_([0-9]+)$")


def _torch_kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d):
        return "depthwise" if m.groups > 1 and m.groups == m.in_channels == m.out_channels else "conv"
    if isinstance(m, nn.BatchNorm2d):
        return "bn"
    return "dense" if isinstance(m, nn.Linear) else None


def torch_layers(chain: nn.Module) -> dict[str, list[nn.Module]]:
    """The torch chain's weight-bearing modules per kind, in block order then creation order."""
    out: dict[str, list[nn.Module]] = {k: [] for k in _KERAS_KINDS.values()}
    for m in chain.modules():
        kind = _torch_kind(m)
        if kind is not None:
            out[kind].append(m)
    return out


def keras_layers(model) -> dict[str, list]:
    """The twin's weight-bearing layers per kind, in creation order (Keras auto-name uid, module doc)."""
    out: dict[str, list] = {k: [] for k in _KERAS_KINDS.values()}
    for layer in model.layers:
        kind = _KERAS_KINDS.get(type(layer).__name__)
        if kind is not None:
            out[kind].append(layer)
    for kind, layers in out.items():
        uids = [_UID.search(layer.name) for layer in layers]
        out[kind] = [layer for _, layer in sorted(
            zip((int(u.group(1)) if u else 0 for u in uids), layers), key=lambda p: p[0])]
    return out


def _torch_weights(kind: str, m: nn.Module) -> list[np.ndarray]:
    """One torch module's parameters in the Keras layer's ``get_weights`` order and layout."""
    if kind == "bn":
        return [t.detach().cpu().numpy() for t in (m.weight, m.bias, m.running_mean, m.running_var)]
    w = m.weight.detach().cpu().numpy()
    if kind == "conv":
        w = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif kind == "depthwise":
        w = w.transpose(2, 3, 0, 1)  # (C, 1, k, k) -> (k, k, C, 1)
    else:
        w = w.T  # Linear (out, in) -> Dense (in, out)
    return [w] + ([m.bias.detach().cpu().numpy()] if m.bias is not None else [])


def copy_weights(torch_chain: nn.Sequential, keras_model) -> None:
    """Copy every conv, depthwise conv, BatchNorm (weights, statistics, eps) and dense weight of a static
    subnet into its Keras twin (SpaceEvo §5 deployment; pairing and layouts in the module doc).

    Raises:
        ConfigError: the two models do not hold the same layers (count or shape per kind).
    """
    src, dst = torch_layers(torch_chain), keras_layers(keras_model)
    for kind in src:
        if len(src[kind]) != len(dst[kind]):
            raise ConfigError(f"torch chain has {len(src[kind])} {kind} layers, the Keras twin "
                              f"{len(dst[kind])}; build the twin from the same BlockSpec chain")
        for i, (m, layer) in enumerate(zip(src[kind], dst[kind])):
            weights = _torch_weights(kind, m)
            want = [tuple(w.shape) for w in layer.get_weights()]
            if [w.shape for w in weights] != want:
                raise ConfigError(f"{kind} layer {i} ({layer.name}): torch gives shapes "
                                  f"{[w.shape for w in weights]}, Keras wants {want}; build the twin from "
                                  "the same BlockSpec chain")
            layer.set_weights(weights)
            if kind == "bn":
                layer.epsilon = float(m.eps)


def _nhwc(images: torch.Tensor, resolution: int) -> np.ndarray:
    """NCHW images, prepared for the stem (:func:`nasq.bkd.teacher.prepare_images`), as float32 NHWC."""
    from nasq.bkd.teacher import prepare_images

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise ConfigError("images must be a non-empty (N, C, H, W) torch tensor, e.g. a data split's x")
    x = prepare_images(images.detach().cpu().float(), resolution)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy(), dtype=np.float32)


def build_twin(torch_chain: nn.Sequential, specs: Sequence[BlockSpec | str], batch: int | None = 1):
    """The Keras twin of ``specs`` with torch's padding and ``torch_chain``'s weights copied (§5)."""
    from nasq.blocks.keras_blocks import build_keras_chain

    if len(specs) != len(torch_chain):
        raise ConfigError(f"{len(specs)} BlockSpecs for a torch chain of {len(torch_chain)} blocks; pass "
                          "space.blocks(subnet) of the subnet that was extracted")
    model = build_keras_chain(specs, batch=batch, torch_padding=True)
    copy_weights(torch_chain, model)
    return model


def export_tflite_int8(torch_chain: nn.Sequential, specs: Sequence[BlockSpec | str],
                       calib_images: torch.Tensor, path: str | Path) -> Path:
    """Write a full-integer INT8 ``.tflite`` of a trained subnet (SpaceEvo §5, TFLite deployment).

    Args:
        torch_chain: the static subnet (:meth:`Supernet.extract_subnet`).
        specs: its BlockSpec chain (``net.space.blocks(subnet)``).
        calib_images: training images (N, C, H, W), normalised like training; prepared to the chain's
            resolution and used one by one as the converter's representative data set.
        path: the file to write (atomically).

    Returns:
        ``path`` as a Path. The model takes one int8 NHWC image and returns int8 logits.
    """
    from nasq.blocks.keras_blocks import keras

    keras()
    import tensorflow as tf

    specs = [BlockSpec.from_key(s) if isinstance(s, str) else s for s in specs]
    samples = _nhwc(calib_images, specs[0].resolution)
    conv = tf.lite.TFLiteConverter.from_keras_model(build_twin(torch_chain, specs, batch=1))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([samples[i:i + 1]] for i in range(len(samples)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        content = conv.convert()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    log.info("wrote %s (%d bytes, calibrated on %d images)", path, len(content), len(samples))
    return path


def tflite_predict(path: str | Path, images: torch.Tensor, threads: int = 1) -> np.ndarray:
    """Float logits (N, classes) of a ``.tflite`` classifier on NCHW ``images`` via LiteRT (§5 accuracy).

    Images are prepared to the model's resolution and, for an int8 input, quantized with the input's scale
    and zero point; int8 outputs are dequantized with the output's.
    """
    from nasq.latency.engines import tflite_interpreter

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no TFLite file at {path}; write one with export_tflite_int8")
    interp = tflite_interpreter(path.read_bytes(), threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = _nhwc(images, int(inp["shape"][1]))
    batch = int(inp["shape"][0])
    if len(x) % batch:
        raise ConfigError(f"{len(x)} images do not fill batches of {batch}; pass a multiple of {batch}")
    logits = []
    for i in range(0, len(x), batch):
        interp.set_tensor(inp["index"], _quantize(x[i:i + batch], inp))
        interp.invoke()
        logits.append(_dequantize(interp.get_tensor(out["index"]), out))
    return np.concatenate(logits)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
