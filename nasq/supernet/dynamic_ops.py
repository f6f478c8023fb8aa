"""Weight-sliced operators of the elastic modules (Once-for-All dynamic ops; SpaceEvo §4.5, §5).

Each operator holds its largest weights; the active size is read from the input (its channel count) and
from explicit arguments (output channels, kernel), never sampled. Slicing keeps the *first* ``k``
channels and the *centre* ``k×k`` of the largest kernel. Every convolution carries an LSQ+ weight
quantizer (per-channel, sliced with the weight) and, unless its block quantizes that tensor once for
several consumers, an LSQ+ input-activation quantizer (:mod:`nasq.quant.lsq`). Names mirror the static
modules of :mod:`nasq.blocks.torch_blocks` (``conv``/``bn`` for ``ConvBNAct``'s ``0``/``1``) so weights
can be copied into them (:func:`static_state`).

:class:`DynamicSE` places its fake-quantization points where an INT8 graph (ONNX Runtime QDQ, TFLite)
of ``SqueezeExcite`` has int8 tensors: the SE input once (``in_q``; that one tensor is both pooled and
multiplied), the pooled vector and the ReLU output (the ``aq`` of ``reduce`` / ``expand``), and the
gate (``gate_q``, the sigmoid / hard-sigmoid output) before the channel-wise multiply. The product is
quantized by its consumer (the block's next conv or its residual quantizer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasq.blocks.spec import se_channels
from nasq.quant.lsq import LsqActQuant, LsqWeightQuant

ACTS = {"relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish, "none": lambda x: x}


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The centre ``kernel × kernel`` of a (…, K, K) weight (Once-for-All elastic kernel, without its
    transformation matrices)."""
    big = weight.shape[-1]
    if kernel == big:
        return weight
    lo = (big - kernel) // 2
    return weight[..., lo:lo + kernel, lo:lo + kernel]


class DynamicConv2d(nn.Module):
    """Conv2d over the first ``cin`` (from the input) / ``cout`` channels and the centre kernel.

    Args:
        max_in, max_out: largest input / output channels.
        max_kernel: largest kernel; padding is ``kernel // 2`` of the active kernel.
        stride: stride.
        depthwise: one filter per channel (``groups = cin``, ``cout = cin``).
        bias: add a bias (the SE convs).
        quant_input: fake-quantize the input here (off when the block quantizes it once for two consumers).
    """

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1,
                 depthwise: bool = False, bias: bool = False, quant_input: bool = True) -> None:
        super().__init__()
        self.max_kernel, self.stride, self.depthwise = max_kernel, stride, depthwise
        out = max_in if depthwise else max_out
        self.weight = nn.Parameter(torch.empty(out, 1 if depthwise else max_in, max_kernel, max_kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        self.wq = LsqWeightQuant(out)
        self.aq = LsqActQuant() if quant_input else None

    def forward(self, x: torch.Tensor, cout: int | None = None, kernel: int | None = None) -> torch.Tensor:
        cin = x.shape[1]
        cout = cin if self.depthwise else (cout or self.weight.shape[0])
        k = kernel or self.max_kernel
        w = centre_crop(self.weight[:cout, : (1 if self.depthwise else cin)], k)
        if self.wq.enabled and not self.wq.initialized:
            self.wq.init_from(self.weight)  # from the full weight, so every channel's scale is set
        w = self.wq(w)
        if self.aq is not None:
            x = self.aq(x)
        b = None if self.bias is None else self.bias[:cout]
        return F.conv2d(x, w, b, self.stride, k // 2, groups=cin if self.depthwise else 1)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d on the first ``c`` channels (running statistics and affine sliced, shared)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            use_batch, factor, self.eps)


class DynamicConvBNAct(nn.Module):
    """Dynamic conv (no bias) + dynamic BN + activation; the elastic twin of ``ConvBNAct``."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1,
                 depthwise: bool = False, act: str = "relu", quant_input: bool = True) -> None:
        super().__init__()
        self.conv = DynamicConv2d(max_in, max_out, max_kernel, stride, depthwise, quant_input=quant_input)
        self.bn = DynamicBatchNorm2d(max_in if depthwise else max_out)
        self.act = act

    def forward(self, x: torch.Tensor, cout: int | None = None, kernel: int | None = None) -> torch.Tensor:
        return ACTS[self.act](self.bn(self.conv(x, cout, kernel)))


class DynamicSE(nn.Module):
    """Squeeze-and-excitation on the active ``c`` channels with ``se_channels(c)`` squeeze width.

    Fake-quantization points (SpaceEvo §5, INT8 QDQ placement): ``in_q`` on the input (the quantized
    tensor is what is pooled and what is multiplied), the ``aq`` of ``reduce`` (the pooled vector) and
    of ``expand`` (the ReLU output), ``gate_q`` on the gate before the multiply. The output is left
    for the consumer to quantize.

    Args:
        max_channels: largest number of channels.
        gate: ``"sigmoid"`` or ``"hsigmoid"``.
        quant_input: quantize the input here; off only when the block already quantizes this very
            tensor (then it must pass the quantized tensor in).
    """

    def __init__(self, max_channels: int, gate: str = "sigmoid", quant_input: bool = True) -> None:
        super().__init__()
        self.reduce = DynamicConv2d(max_channels, se_channels(max_channels), bias=True)
        self.expand = DynamicConv2d(se_channels(max_channels), max_channels, bias=True)
        self.gate = gate
        self.in_q = LsqActQuant() if quant_input else None
        self.gate_q = LsqActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.in_q is not None:
            x = self.in_q(x)
        s = F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1), se_channels(c)))
        s = self.expand(s, c)
        g = self.gate_q(F.hardsigmoid(s) if self.gate == "hsigmoid" else torch.sigmoid(s))
        return x * g


def static_state(dynamic: nn.Module, static: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``static`` (a :mod:`nasq.blocks.torch_blocks` module of the active size) cut
    out of ``dynamic``: first channels in every dim, centre crop in the two kernel dims.

    Static ``X.0.`` / ``X.1.`` (ConvBNAct's conv / BN) read the dynamic ``X.conv.`` / ``X.bn.``; LSQ+
    quantizer tensors have no static counterpart and are left out.
    """
    source = dynamic.state_dict()
    out = {}
    for name, target in static.state_dict().items():
        key = _dynamic_name(name, source)
        value = source[key]
        if value.dim() == 4 and target.dim() == 4:
            value = centre_crop(value, target.shape[-1])
        out[name] = value[tuple(slice(0, n) for n in target.shape)].clone() if target.dim() else value.clone()
    return out


def _dynamic_name(name: str, source: dict) -> str:
    if name in source:
        return name
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p in ("0", "1"):
            cand = ".".join(parts[:i] + ["conv" if p == "0" else "bn"] + parts[i + 1:])
            if cand in source:
                return cand
    raise KeyError(f"no elastic weight for static {name!r}")
