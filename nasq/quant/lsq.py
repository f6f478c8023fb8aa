"""LSQ+ fake quantization for INT8 (Bhalgat et al. 2020; SpaceEvo §4.5 and §5 quantization-aware training).

Two quantizers, both thin wrappers of torch's learnable fake-quantize kernels
(``torch._fake_quantize_learnable_per_tensor_affine`` / ``_per_channel_affine``), which give LSQ's
straight-through gradients for the input, the scale and the zero point:

- :class:`LsqWeightQuant`: weights, **per-channel symmetric** int8 along axis 0 (the output channel), range
  [-127, 127], zero point fixed at 0 (TFLite's int8 weight rule; ONNX Runtime's symmetric QDQ weights), with
  a learnable scale per channel. An elastic layer whose active weight has only its first ``k`` output
  channels uses the first ``k`` scales (``scale[:k]``), so one quantizer serves every active width
  (Once-for-All slicing; SpaceEvo §5 "every subnet directly deployable in INT8").
- :class:`LsqActQuant`: activations, **per-tensor asymmetric** uint8 [0, 255] with a learnable scale and a
  learnable offset (LSQ+'s β, held as a float zero point).

Arithmetic is that of ONNX ``QuantizeLinear``/``DequantizeLinear`` and TFLite's int8 kernels:
``q = clamp(round_half_even(x / s) + z, qmin, qmax)``, ``x̂ = (q - z) · s`` with an integer zero point
(torch rounds the learnable zero point half-to-even and clamps it into range in the forward pass; torch
multiplies by ``1 / s``, which can differ from ``x / s`` by one ulp at exact ties). :meth:`qparams` gives
the float scale and integer zero point an exporter writes.

Initialisation follows LSQ+: weights ``s = max(|μ − 3σ|, |μ + 3σ|) / 127`` per channel (capped at the
channel's max |w|), activations from the first batch's min/max (widened to include 0, so 0 is exact).
Quantizers are off until :func:`set_quant` turns them on; the first quantized forward initialises them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EPS = 1e-8  # smallest scale


class _LsqBase(nn.Module):
    qmin: int
    qmax: int

    def __init__(self) -> None:
        super().__init__()
        self.enabled = False
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    def _clamp_scale(self) -> None:
        with torch.no_grad():
            self.scale.abs_().clamp_(min=EPS)

    def extra_repr(self) -> str:
        return f"range=[{self.qmin}, {self.qmax}], enabled={self.enabled}"


class LsqWeightQuant(_LsqBase):
    """Per-channel (axis 0) symmetric int8 weight fake quantizer with learnable scales (LSQ+, §5).

    Args:
        channels: the largest number of output channels it will see; a weight with fewer (an elastic
            layer's first ``k`` channels) uses ``scale[:k]``.
        bits: weight bits (8: range [-127, 127]).
    """

    def __init__(self, channels: int, bits: int = 8) -> None:
        super().__init__()
        self.qmax = 2 ** (bits - 1) - 1
        self.qmin = -self.qmax
        self.scale = nn.Parameter(torch.ones(channels))
        self.register_buffer("zero_point", torch.zeros(channels))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor) -> None:
        """LSQ+ initialisation from the (full-size) weight: s = max(|μ ± 3σ|) / qmax per channel."""
        w = weight.detach().reshape(weight.shape[0], -1)
        mu, sd = w.mean(1), w.std(1, unbiased=False)
        rule = torch.maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs())
        s = torch.minimum(rule, w.abs().amax(1)).clamp_min(EPS) / self.qmax
        self.scale[: len(s)] = s
        self.initialized.fill_(1)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``weight`` (its first dim ≤ ``channels``) when enabled, else return it."""
        if not self.enabled:
            return weight
        if not self.initialized:
            self.init_from(weight)
        self._clamp_scale()
        k = weight.shape[0]
        grad = 1.0 / math.sqrt(weight[0].numel() * self.qmax)
        return torch._fake_quantize_learnable_per_channel_affine(
            weight, self.scale[:k], self.zero_point[:k], 0, self.qmin, self.qmax, grad)

    def qparams(self, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float scales and int32 zero points (all 0) of the first ``channels`` channels (export)."""
        k = len(self.scale) if channels is None else channels
        return self.scale.detach()[:k].abs().clamp_min(EPS).clone(), torch.zeros(k, dtype=torch.int32)


class LsqActQuant(_LsqBase):
    """Per-tensor asymmetric uint8 activation fake quantizer, learnable scale and offset (LSQ+, §5)."""

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.qmin, self.qmax = 0, 2 ** bits - 1
        self.scale = nn.Parameter(torch.ones(1))
        self.zero_point = nn.Parameter(torch.zeros(1))

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """LSQ+ initialisation from a batch: the range [min(x, 0), max(x, 0)] maps onto [qmin, qmax]."""
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        s = max(hi - lo, EPS) / (self.qmax - self.qmin)
        self.scale.fill_(s)
        self.zero_point.fill_(float(min(max(round(self.qmin - lo / s), self.qmin), self.qmax)))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` when enabled, else return it."""
        if not self.enabled:
            return x
        if not self.initialized:
            self.init_from(x)
        self._clamp_scale()
        grad = 1.0 / math.sqrt(x[0].numel() * self.qmax)
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, self.scale, self.zero_point, self.qmin, self.qmax, grad)

    def qparams(self) -> tuple[float, int]:
        """Float scale and integer zero point as an exporter writes them (zero point rounded half-even)."""
        s = float(self.scale.detach().abs().clamp_min(EPS))
        z = int(torch.round(self.zero_point.detach()).clamp(self.qmin, self.qmax))
        return s, z


def set_quant(module: nn.Module, enabled: bool) -> nn.Module:
    """Turn every LSQ+ quantizer inside ``module`` on or off (fp32 vs fake-INT8 forward); returns it."""
    for m in module.modules():
        if isinstance(m, _LsqBase):
            m.enabled = bool(enabled)
    return module


def quantizer_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The learnable scales and offsets of every LSQ+ quantizer inside ``module``."""
    return [p for m in module.modules() if isinstance(m, _LsqBase) for p in m.parameters(recurse=False)]


__all__ = ["LsqActQuant", "LsqWeightQuant", "quantizer_parameters", "set_quant"]
