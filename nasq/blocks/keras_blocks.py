"""Keras twins of the PyTorch blocks, for TFLite conversion (SpaceEvo Sec. 4, TFLite INT8 latency).

Same op structure as :mod:`nasq.blocks.torch_blocks` in NHWC layout with ``padding="same"`` (equal output
shapes for odd kernels), conv + BatchNorm (folded by the TFLite converter; epsilon 1e-5 as in torch),
ReLU6/ReLU/hardswish and squeeze-and-excitation. TensorFlow is imported only when a twin is built.

``"same"`` pads a stride-2 conv on an even-sized input asymmetrically (none before, the rest after), torch
pads ``k // 2`` on every side: same shapes and ops, different numbers. Latency measurement keeps
``"same"``; ``build_keras_chain(..., torch_padding=True)`` inserts a ``ZeroPadding2D`` before exactly those
convs (a ``PAD`` op in TFLite), so a twin with copied weights computes what the torch subnet computes.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any, Callable, Sequence

from nasq.blocks.spec import BlockSpec, check_chain, mid_channels, se_channels
from nasq.errors import ConfigError, GenomeError, bad_token

TFLITE_INSTALL = "Keras twins and TFLite engines need TensorFlow: pip install nasq[tflite]"
KerasBlock = Callable[[Any, BlockSpec], Any]   # (keras tensor, spec) -> keras tensor
_REGISTRY: dict[str, KerasBlock] = {}
BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default, so copied BN statistics normalise alike
_TORCH_PADDING: ContextVar[bool] = ContextVar("torch_padding", default=False)  # set by build_keras_chain


def keras():
    """Import Keras on the TensorFlow backend, or raise ConfigError saying what to install."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _load_triton_first()
    try:
        import keras as _keras
        import tensorflow  # noqa: F401  (the converter needs the TensorFlow backend)
    except ImportError as exc:
        raise ConfigError(f"{TFLITE_INSTALL} ({exc})") from exc
    return _keras


def _load_triton_first() -> None:
    """Load Triton (shipped with torch) before TensorFlow.

    With torch 2.14 and TensorFlow 2.21, importing TensorFlow first makes the process crash
    (SIGSEGV) as soon as torch later imports Triton (``torch._dynamo``, e.g. ONNX export or
    model compilation); in the other order both work. Importing Triton costs about 0.1 s.
    """
    try:
        import triton  # noqa: F401
    except Exception:  # torch builds without Triton have nothing to order
        pass


def _act(x, name: str):
    k = keras()
    if name == "relu6":
        return k.layers.ReLU(max_value=6.0)(x)
    if name == "relu":
        return k.layers.ReLU()(x)
    if name == "hswish":
        return k.layers.Activation("hard_swish")(x)
    return x


def conv_bn_act(x, cout: int, kernel: int, stride: int = 1, act: str = "relu", depthwise: bool = False):
    """Conv (no bias, 'same' padding, or torch's, see the module doc) or depthwise conv, BatchNorm, act."""
    k = keras()
    x, padding = _pad(x, kernel, stride)
    if depthwise:
        x = k.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False)(x)
    else:
        x = k.layers.Conv2D(cout, kernel, stride, padding=padding, use_bias=False)(x)
    return _act(k.layers.BatchNormalization(epsilon=BN_EPSILON)(x), act)


def _pad(x, kernel: int, stride: int):
    """``(x, "same")``, or torch's ``k // 2`` zero padding and ``"valid"`` where "same" would differ."""
    if not _TORCH_PADDING.get() or stride == 1 or kernel == 1 or x.shape[1] % 2:
        return x, "same"
    return keras().layers.ZeroPadding2D(kernel // 2)(x), "valid"


def squeeze_excite(x, channels: int, gate: str = "sigmoid"):
    """Squeeze-and-excitation: pool, 1x1 reduce + ReLU, 1x1 expand + gate, scale."""
    k = keras()
    s = k.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = k.layers.Conv2D(se_channels(channels), 1, activation="relu")(s)
    s = k.layers.Conv2D(channels, 1)(s)
    s = k.layers.Activation("hard_sigmoid" if gate == "hsigmoid" else "sigmoid")(s)
    return k.layers.Multiply()([x, s])


def register_keras_block(name: str) -> Callable[[KerasBlock], KerasBlock]:
    """Register the Keras twin of a block type (decorator)."""
    def deco(fn: KerasBlock) -> KerasBlock:
        if name in _REGISTRY:
            raise ConfigError(f"Keras block {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return deco


@register_keras_block("stem")
def _stem(x, s: BlockSpec):
    return conv_bn_act(x, s.cout, s.kernel, s.stride, "relu")


@register_keras_block("head")
def _head(x, s: BlockSpec):
    k = keras()
    return k.layers.Dense(s.cout)(k.layers.GlobalAveragePooling2D()(x))


@register_keras_block("mbv1")
def _mbv1(x, s: BlockSpec):
    x = conv_bn_act(x, s.cin, s.kernel, s.stride, "relu6", depthwise=True)
    return conv_bn_act(x, s.cout, 1, act="relu6")


def _inverted(x, s: BlockSpec, act: str, se: bool):
    y = conv_bn_act(x, mid_channels(s), 1, act=act) if s.expand != 1.0 else x
    y = conv_bn_act(y, mid_channels(s), s.kernel, s.stride, act, depthwise=True)
    y = squeeze_excite(y, mid_channels(s), "hsigmoid") if se else y
    y = conv_bn_act(y, s.cout, 1, act="none")
    return keras().layers.Add()([x, y]) if s.residual else y


def _fused(x, s: BlockSpec, se: bool):
    y = conv_bn_act(x, mid_channels(s), s.kernel, s.stride, "relu6")
    y = squeeze_excite(y, mid_channels(s), "sigmoid") if se else y
    y = conv_bn_act(y, s.cout, 1, act="none")
    return keras().layers.Add()([x, y]) if s.residual else y


def _bottleneck(x, s: BlockSpec, se: bool):
    k = keras()
    y = conv_bn_act(x, mid_channels(s), 1, act="relu")
    y = conv_bn_act(y, mid_channels(s), s.kernel, s.stride, "relu")
    y = conv_bn_act(y, s.cout, 1, act="none")
    y = squeeze_excite(y, s.cout, "sigmoid") if se else y
    short = x if s.residual else conv_bn_act(x, s.cout, 1, s.stride, "none")
    return k.layers.ReLU()(k.layers.Add()([short, y]))


register_keras_block("mbv2")(lambda x, s: _inverted(x, s, "relu6", False))
register_keras_block("mbv3")(lambda x, s: _inverted(x, s, "hswish", True))
register_keras_block("fused_mb")(lambda x, s: _fused(x, s, False))
register_keras_block("fused_mb_se")(lambda x, s: _fused(x, s, True))
register_keras_block("resnet_bottleneck")(lambda x, s: _bottleneck(x, s, False))
register_keras_block("resnet_bottleneck_se")(lambda x, s: _bottleneck(x, s, True))


def list_keras_blocks() -> list[str]:
    """Sorted names of block types with a Keras twin."""
    return sorted(_REGISTRY)


def build_keras_chain(specs: Sequence[BlockSpec | str], batch: int | None = 1, torch_padding: bool = False):
    """Keras functional model of a chain of blocks, NHWC input ``(batch, r, r, cin)`` (Sec. 4, TFLite).

    ``torch_padding`` pads stride-2 convs like torch (module doc): for deployment with copied weights
    (:mod:`nasq.deploy.tflite_export`); the default keeps the latency-measurement graph.
    """
    specs = [BlockSpec.from_key(s) if isinstance(s, str) else s for s in specs]
    check_chain(specs)
    for s in specs:
        if s.type not in _REGISTRY:
            raise GenomeError(bad_token("block type", s.type, list_keras_blocks()))
    k = keras()
    inp = k.Input((specs[0].resolution, specs[0].resolution, specs[0].cin), batch_size=batch)
    x = inp
    token = _TORCH_PADDING.set(bool(torch_padding))
    try:
        for s in specs:
            x = _REGISTRY[s.type](x, s)
    finally:
        _TORCH_PADDING.reset(token)
    return k.Model(inp, x)


def create_keras_block(spec: BlockSpec | str, batch: int | None = None):
    """Keras model of one block (the twin of :func:`nasq.blocks.torch_blocks.create_block`)."""
    return build_keras_chain([spec], batch=batch)
