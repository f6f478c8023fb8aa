"""Quantized extraction: the active subnet as a static network that carries the supernet's LSQ+
quantizers, frozen (SpaceEvo §5 "every subnet directly deployable in INT8"; LSQ+, Bhalgat et al. 2020).

:func:`extract_quantized_subnet` starts from the supernet's fp32 static chain
(:meth:`~nasq.supernet.model.Supernet.extract_subnet`: :mod:`nasq.blocks.torch_blocks` modules with the
weights sliced) and puts a frozen copy of every LSQ+ quantizer that the active subnet runs at the very
point where the elastic module applies it (:mod:`nasq.supernet.elastic`, :mod:`~nasq.supernet.dynamic_ops`):

- every conv and the head's linear layer: its weight per output channel (:class:`FrozenWeightQuant`,
  the elastic scales sliced to the first ``cout`` channels, as the elastic conv slices them), and its
  input where the elastic conv quantizes it (``aq``; :class:`QConv2d`);
- a block's input once (``in_q``), the residual operand (``res_q``), the bottleneck's shortcut output
  (``short_q``), in :class:`QuantBlock`; the SE input and gate (:class:`QuantSE`); the head's input and
  pooled vector (:class:`QuantHead`).

Frozen quantizers hold the exported integers: a float scale and an integer zero point (the learnt LSQ+
offset rounded half-to-even, as the learnable kernel rounds it), and call torch's non-learnable
``fake_quantize_per_tensor_affine`` / ``per_channel_affine``, the kernels behind the learnable ones, so
in eval mode the copy equals the supernet's fake-quant forward bit for bit, and ``torch.onnx.export``
writes each one as a QuantizeLinear/DequantizeLinear pair (:mod:`nasq.deploy.onnx_export`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasq.blocks.torch_blocks import (Bottleneck, ConvBNAct, DepthwiseSeparable, FusedMBConv, Head,
                                      InvertedResidual, SqueezeExcite)
from nasq.errors import ConfigError
from nasq.quant.lsq import LsqActQuant, LsqWeightQuant


class FrozenActQuant(nn.Module):
    """Per-tensor asymmetric fake quantizer with fixed scale and integer zero point (a frozen LSQ+ one)."""

    def __init__(self, scale: float, zero_point: int, qmin: int = 0, qmax: int = 255) -> None:
        super().__init__()
        self.qmin, self.qmax = qmin, qmax
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor(int(zero_point), dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}"


class FrozenWeightQuant(nn.Module):
    """Per-channel (axis 0) symmetric fake quantizer with fixed scales, zero points 0 (frozen LSQ+)."""

    def __init__(self, scale: torch.Tensor, qmin: int = -127, qmax: int = 127) -> None:
        super().__init__()
        self.qmin, self.qmax = qmin, qmax
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("zero_point", torch.zeros(len(scale), dtype=torch.int32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero_point, 0, self.qmin, self.qmax)


class QConv2d(nn.Conv2d):
    """Conv2d whose weight (and, with ``aq``, input) is fake-quantized first (the static twin of
    :class:`~nasq.supernet.dynamic_ops.DynamicConv2d` with its quantizers on)."""

    wq: FrozenWeightQuant
    aq: FrozenActQuant | None

    @classmethod
    def wrap(cls, conv: nn.Conv2d, wq: FrozenWeightQuant, aq: FrozenActQuant | None) -> QConv2d:
        """A QConv2d with ``conv``'s geometry, sharing its weight and bias."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                groups=conv.groups, bias=conv.bias is not None)
        q.weight, q.bias, q.wq, q.aq = conv.weight, conv.bias, wq, aq
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.wq(self.weight)  # weight first, then input: the elastic conv's order
        return self._conv_forward(x if self.aq is None else self.aq(x), w, self.bias)


class QuantSE(nn.Module):
    """Squeeze-excite with the elastic SE's quantization points: input, pooled vector (``reduce.aq``),
    ReLU output (``expand.aq``), gate; the product is left for its consumer (§5)."""

    def __init__(self, se: SqueezeExcite, in_q: FrozenActQuant | None, gate_q: FrozenActQuant,
                 reduce: QConv2d, expand: QConv2d) -> None:
        super().__init__()
        self.in_q, self.pool, self.reduce, self.act = in_q, se.pool, reduce, se.act
        self.expand, self.gate, self.gate_q = expand, se.gate, gate_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_q is not None:
            x = self.in_q(x)
        return x * self.gate_q(self.gate(self.expand(self.act(self.reduce(self.pool(x))))))


class QuantBlock(nn.Module):
    """One body block: ``in_q`` on the input, the body, then (when the block adds) the shortcut
    (identity or ``short_q(shortcut(x))``) plus ``res_q(body)``, then ``out_act`` (the bottleneck's ReLU)."""

    def __init__(self, in_q: FrozenActQuant, body: nn.Sequential, res_q: FrozenActQuant | None = None,
                 shortcut: nn.Module | None = None, short_q: FrozenActQuant | None = None,
                 out_act: nn.Module | None = None) -> None:
        super().__init__()
        self.in_q, self.body, self.res_q = in_q, body, res_q
        self.shortcut, self.short_q = shortcut, short_q
        self.out_act = out_act if out_act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.in_q(x)
        y = self.body(xq)
        if self.res_q is None:
            return y
        short = xq if self.shortcut is None else self.short_q(self.shortcut(xq))
        return self.out_act(short + self.res_q(y))


class QuantHead(nn.Module):
    """Pool + linear with the elastic head's quantizers: input, pooled vector, linear weight (§5)."""

    def __init__(self, head: Head, in_q: FrozenActQuant, pool_q: FrozenActQuant,
                 wq: FrozenWeightQuant) -> None:
        super().__init__()
        self.in_q, self.pool, self.pool_q, self.fc, self.wq = in_q, head.pool, pool_q, head.fc, wq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.pool_q(torch.flatten(self.pool(self.in_q(x)), 1))
        return F.linear(v, self.wq(self.fc.weight), self.fc.bias)


def freeze_act(q: LsqActQuant | None, where: str) -> FrozenActQuant | None:
    """A frozen copy of an initialised LSQ+ activation quantizer (its exported scale and zero point)."""
    if q is None:
        return None
    _check_initialised(q, where)
    s, z = q.qparams()
    return FrozenActQuant(s, z, q.qmin, q.qmax)


def freeze_weight(q: LsqWeightQuant, channels: int, where: str) -> FrozenWeightQuant:
    """A frozen copy of the first ``channels`` scales of an LSQ+ weight quantizer (Once-for-All slice)."""
    _check_initialised(q, where)
    return FrozenWeightQuant(q.qparams(channels)[0], q.qmin, q.qmax)


def _check_initialised(q: nn.Module, where: str) -> None:
    if not bool(q.initialized):
        raise ConfigError(f"LSQ+ quantizer {where} of the active subnet is not initialised; run "
                          "enable_qat and a quantized forward of this subnet before extracting it")


def _conv(static: nn.Conv2d, dynamic: nn.Module, where: str) -> QConv2d:
    """``static`` (a sliced conv) with the quantizers of the elastic ``DynamicConv2d`` it was cut from."""
    wq = freeze_weight(dynamic.wq, static.out_channels, f"{where}.wq")
    return QConv2d.wrap(static, wq, freeze_act(dynamic.aq, f"{where}.aq"))


def _part(static: nn.Module, dynamic: nn.Module, where: str) -> nn.Module:
    """A ConvBNAct or SqueezeExcite of a static block, quantized like its elastic twin."""
    if isinstance(static, ConvBNAct):
        return nn.Sequential(_conv(static[0], dynamic.conv, f"{where}.conv"), static[1], static[2])
    if isinstance(static, SqueezeExcite):
        return QuantSE(static, freeze_act(dynamic.in_q, f"{where}.in_q"),
                       freeze_act(dynamic.gate_q, f"{where}.gate_q"),
                       _conv(static.reduce, dynamic.reduce, f"{where}.reduce"),
                       _conv(static.expand, dynamic.expand, f"{where}.expand"))
    raise AssertionError(f"no quantized twin for {type(static).__name__}")


#: The parts of each static block type in forward order (names shared with the elastic blocks).
_BODY = {DepthwiseSeparable: ("dw", "pw"), InvertedResidual: ("expand", "dw", "se", "project"),
         FusedMBConv: ("fused", "se", "project"), Bottleneck: ("conv1", "conv2", "conv3", "se")}


def quantize_block(static: nn.Module, dynamic: nn.Module, where: str) -> nn.Module:
    """The quantized twin of one module of the fp32 chain, given the elastic module it was cut from."""
    if isinstance(static, ConvBNAct):  # the stem
        return _part(static, dynamic, where)
    if isinstance(static, Head):
        return QuantHead(static, freeze_act(dynamic.in_q, f"{where}.in_q"),
                         freeze_act(dynamic.pool_q, f"{where}.pool_q"),
                         freeze_weight(dynamic.wq, static.fc.out_features, f"{where}.wq"))
    parts = [_part(getattr(static, n), getattr(dynamic, n), f"{where}.{n}")
             for n in _BODY[type(static)] if not isinstance(getattr(static, n), nn.Identity)]
    in_q = freeze_act(dynamic.in_q, f"{where}.in_q")
    if isinstance(static, Bottleneck):
        keep = isinstance(static.shortcut, nn.Identity)
        return QuantBlock(in_q, nn.Sequential(*parts), freeze_act(dynamic.res_q, f"{where}.res_q"),
                          None if keep else _part(static.shortcut, dynamic.shortcut, f"{where}.shortcut"),
                          None if keep else freeze_act(dynamic.short_q, f"{where}.short_q"), static.act)
    residual = getattr(static, "residual", False)
    return QuantBlock(in_q, nn.Sequential(*parts), freeze_act(dynamic.res_q, f"{where}.res_q") if residual
                      else None)


def extract_quantized_subnet(net: nn.Module, subnet: object | None = None) -> nn.Sequential:
    """The active subnet (``subnet`` made active first when given) as a static network carrying the
    supernet's LSQ+ quantizers, frozen and sliced to the subnet's channels (SpaceEvo §5, LSQ+).

    Args:
        net: a :class:`~nasq.supernet.model.Supernet` whose quantizers the active subnet uses are
            initialised (:func:`~nasq.supernet.train.enable_qat`, then a quantized forward of the subnet).
        subnet: a :class:`~nasq.spaces.spaceevo_subnet.SubnetGenome` or its string.

    Returns:
        ``nn.Sequential`` (stem, one module per body block, head) in eval mode; its output equals the
        supernet's fake-quant output in eval mode (quantizers on) for the same subnet.

    Raises:
        ConfigError: a quantizer the subnet runs is not initialised yet.
    """
    chain = net.extract_subnet(subnet)
    names = {id(m): n for n, m in net.named_modules()}
    return nn.Sequential(*(quantize_block(static, dynamic, names[id(dynamic)])
                           for static, dynamic in zip(chain, net.active_modules()))).eval()


__all__ = ["FrozenActQuant", "FrozenWeightQuant", "QConv2d", "QuantBlock", "QuantHead", "QuantSE",
           "extract_quantized_subnet", "freeze_act", "freeze_weight", "quantize_block"]
