"""Elastic (weight-shared) stages over the seven ``nasq.blocks`` body types (SpaceEvo §4.1, §4.5, §5).

An :class:`ElasticStageModule` is one elastic stage E(b, c) in the Once-for-All shape: it holds the
largest weights (deepest, widest input and output, largest kernel and expand) and an *active setting*,
the tuple of :class:`~nasq.spaces.spaceevo_subnet.BlockChoice` of the active blocks (its length is the
depth), set by :meth:`ElasticStageModule.set_active`; it never samples. The active input width is the
input's channel count. Slicing: the first ``k`` channels, the centre kernel, the first ``d`` blocks.

Each elastic block reproduces the static module of :mod:`nasq.blocks.torch_blocks` for the BlockSpec
that :meth:`nasq.spaces.spaceevo_subnet.CandidateSpace.blocks` writes for the same choice (hidden width
``round(cin·e)`` for MobileNet/fused types and ``round(cout·e)`` for ResNet types, SE widths from
``se_channels``, residual when stride 1 and cin == cout, the strided stage-first block), so
:meth:`ElasticStageModule.extract` returns that static chain with the weights copied and equal outputs.

Fake quantization (LSQ+, :mod:`nasq.quant.lsq`; SpaceEvo §4.5, §5) sits where an INT8 graph of the
block (ONNX Runtime QDQ, TFLite) holds int8 tensors, each tensor quantized exactly once:

- ``in_q``: the block input, once, for every reader (its first conv(s), the bottleneck's shortcut
  conv, the identity operand of the residual add);
- each later conv's ``aq``: its own input (the previous conv's activation output, or the SE output);
- the SE (:class:`~nasq.supernet.dynamic_ops.DynamicSE`): its input once (``se.in_q``; the tensor that
  is pooled and multiplied), the pooled vector and ReLU output (the SE convs' ``aq``), the gate
  (``se.gate_q``) before the multiply;
- ``res_q``: the residual branch (project / conv3 output, or the SE output after conv3) before the add,
  so both add operands are int8; ``short_q``: the bottleneck's shortcut-conv output before the add;
- every conv's weights, per-channel (``wq``).

The sum (and a non-residual block's output) is quantized by the next block's ``in_q`` (or by the
consumer of the stage). :func:`nasq.quant.lsq.set_quant` turns them all on; off (the default) every
quantizer is the identity and the block equals its static module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nasq.blocks.spec import BlockSpec
from nasq.blocks.torch_blocks import create_block
from nasq.errors import ConfigError, bad_token
from nasq.quant.lsq import LsqActQuant
from nasq.spaces.spaceevo import SPACEEVO_TYPES, ElasticStage
from nasq.spaces.spaceevo_subnet import BlockChoice
from nasq.supernet.dynamic_ops import DynamicConvBNAct, DynamicSE, static_state


class _ElasticBlock(nn.Module):
    """Common parts: the block's input quantizer (``in_q``) and the residual rule."""

    def __init__(self, block_type: str, stride: int) -> None:
        super().__init__()
        self.block_type, self.stride = block_type, stride
        self.in_q = LsqActQuant()

    def residual(self, cin: int, cout: int) -> bool:
        return self.stride == 1 and cin == cout


class ElasticMBV1(_ElasticBlock):
    """MobileNetV1 depthwise-separable block: dw k×k (stride) + pw 1×1, ReLU6 after each."""

    def __init__(self, max_cin: int, max_cout: int, max_kernel: int, stride: int, **_: object) -> None:
        super().__init__("mbv1", stride)
        self.dw = DynamicConvBNAct(max_cin, max_cin, max_kernel, stride, depthwise=True, act="relu6",
                                   quant_input=False)
        self.pw = DynamicConvBNAct(max_cin, max_cout, 1, act="relu6")

    def forward(self, x: torch.Tensor, c: BlockChoice) -> torch.Tensor:
        return self.pw(self.dw(self.in_q(x), kernel=c.kernel), c.width)


class ElasticMBConv(_ElasticBlock):
    """MobileNetV2 / V3 inverted residual: 1×1 expand (skipped at e = 1), dw k×k, [SE], linear project."""

    def __init__(self, max_cin: int, max_cout: int, max_kernel: int, stride: int, max_expand: float,
                 block_type: str = "mbv2") -> None:
        super().__init__(block_type, stride)
        act, se = ("hswish", True) if block_type == "mbv3" else ("relu6", False)
        mid = max(1, round(max_cin * max_expand))
        self.expand = DynamicConvBNAct(max_cin, mid, 1, act=act, quant_input=False)
        self.dw = DynamicConvBNAct(mid, mid, max_kernel, stride, depthwise=True, act=act)
        self.se = DynamicSE(mid, "hsigmoid") if se else None
        self.project = DynamicConvBNAct(mid, max_cout, 1, act="none")
        self.res_q = LsqActQuant()  # the project output, an operand of the residual add

    def forward(self, x: torch.Tensor, c: BlockChoice) -> torch.Tensor:
        xq = self.in_q(x)
        cin = x.shape[1]
        if c.expand == 1.0:
            h = self.dw(xq, kernel=c.kernel)  # no expand conv: the dw conv reads the block input
        else:
            h = self.dw(self.expand(xq, max(1, round(cin * c.expand))), kernel=c.kernel)
        if self.se is not None:
            h = self.se(h)
        y = self.project(h, c.width)
        return xq + self.res_q(y) if self.residual(cin, c.width) else y


class ElasticFusedMB(_ElasticBlock):
    """Fused-MBConv: k×k expand conv (stride), [SE], linear 1×1 project, residual."""

    def __init__(self, max_cin: int, max_cout: int, max_kernel: int, stride: int, max_expand: float,
                 block_type: str = "fused_mb") -> None:
        super().__init__(block_type, stride)
        mid = max(1, round(max_cin * max_expand))
        self.fused = DynamicConvBNAct(max_cin, mid, max_kernel, stride, act="relu6", quant_input=False)
        self.se = DynamicSE(mid, "sigmoid") if block_type == "fused_mb_se" else None
        self.project = DynamicConvBNAct(mid, max_cout, 1, act="none")
        self.res_q = LsqActQuant()  # the project output, an operand of the residual add

    def forward(self, x: torch.Tensor, c: BlockChoice) -> torch.Tensor:
        xq = self.in_q(x)
        cin = x.shape[1]
        h = self.fused(xq, max(1, round(cin * c.expand)), c.kernel)
        if self.se is not None:
            h = self.se(h)
        y = self.project(h, c.width)
        return xq + self.res_q(y) if self.residual(cin, c.width) else y


class ElasticBottleneck(_ElasticBlock):
    """ResNet bottleneck: 1×1 reduce, k×k (stride), 1×1 to cout, [SE], shortcut add, ReLU."""

    def __init__(self, max_cin: int, max_cout: int, max_kernel: int, stride: int, max_expand: float,
                 block_type: str = "resnet_bottleneck") -> None:
        super().__init__(block_type, stride)
        mid = max(1, round(max_cout * max_expand))
        self.conv1 = DynamicConvBNAct(max_cin, mid, 1, act="relu", quant_input=False)
        self.conv2 = DynamicConvBNAct(mid, mid, max_kernel, stride, act="relu")
        self.conv3 = DynamicConvBNAct(mid, max_cout, 1, act="none")
        self.se = DynamicSE(max_cout, "sigmoid") if block_type == "resnet_bottleneck_se" else None
        self.shortcut = DynamicConvBNAct(max_cin, max_cout, 1, stride, act="none", quant_input=False)
        self.res_q = LsqActQuant()  # the conv3 (or SE) output, an operand of the add
        self.short_q = LsqActQuant()  # the shortcut-conv output, the other operand

    def forward(self, x: torch.Tensor, c: BlockChoice) -> torch.Tensor:
        xq = self.in_q(x)
        cin, cout = x.shape[1], c.width
        mid = max(1, round(cout * c.expand))
        y = self.conv3(self.conv2(self.conv1(xq, mid), mid, c.kernel), cout)
        if self.se is not None:
            y = self.se(y)
        short = xq if self.residual(cin, cout) else self.short_q(self.shortcut(xq, cout))
        return torch.relu(short + self.res_q(y))


def stage_specs(stage: ElasticStage, cin: int, blocks: Sequence[BlockChoice]) -> list[BlockSpec]:
    """BlockSpecs of ``blocks`` in ``stage`` on a ``cin``-channel input, as ``CandidateSpace.blocks``
    writes them (stride on the first block, resolution carried along; SpaceEvo §4.1)."""
    specs, res = [], stage.resolution
    for j, b in enumerate(blocks):
        spec = BlockSpec(stage.type, res, cin, b.width, b.kernel, stage.stride if j == 0 else 1, b.expand)
        specs.append(spec)
        cin, res = b.width, spec.out_resolution
    return specs


_FAMILIES = {"mbv1": ElasticMBV1, "mbv2": ElasticMBConv, "mbv3": ElasticMBConv, "fused_mb": ElasticFusedMB,
             "fused_mb_se": ElasticFusedMB, "resnet_bottleneck": ElasticBottleneck,
             "resnet_bottleneck_se": ElasticBottleneck}


def make_elastic_block(block_type: str, max_cin: int, max_cout: int, max_kernel: int, stride: int,
                       max_expand: float = 1.0) -> nn.Module:
    """The elastic block of ``block_type`` at its largest size (SpaceEvo §4.1 block types)."""
    if block_type not in _FAMILIES:
        raise ConfigError(bad_token("elastic block type", block_type, list(SPACEEVO_TYPES)))
    return _FAMILIES[block_type](max_cin, max_cout, max_kernel, stride, max_expand=max_expand,
                                 block_type=block_type)


class ElasticStageModule(nn.Module):
    """One elastic stage E(b, c): up to ``max(depths)`` elastic blocks of one type (SpaceEvo §4.1, §4.5).

    Args:
        stage: the stage description (:class:`nasq.spaces.spaceevo.ElasticStage`): type, output widths,
            input widths, stride of the first block, input resolution, kernels, depths, expands.
    """

    def __init__(self, stage: ElasticStage) -> None:
        super().__init__()
        self.stage = stage
        k, e = max(stage.kernels), max(stage.expands)
        self.blocks = nn.ModuleList(
            make_elastic_block(stage.type, max(stage.in_widths) if j == 0 else max(stage.widths),
                               max(stage.widths), k, stage.stride if j == 0 else 1, e)
            for j in range(max(stage.depths)))
        self.active: tuple[BlockChoice, ...] = self.largest()

    def largest(self) -> tuple[BlockChoice, ...]:
        """Deepest setting with the widest, largest-kernel, largest-expand blocks (sandwich max)."""
        s = self.stage
        return (BlockChoice(max(s.widths), max(s.kernels), max(s.expands)),) * max(s.depths)

    def smallest(self) -> tuple[BlockChoice, ...]:
        """Shallowest setting with the narrowest, smallest-kernel, smallest-expand blocks (sandwich min)."""
        s = self.stage
        return (BlockChoice(min(s.widths), min(s.kernels), min(s.expands)),) * min(s.depths)

    def set_active(self, blocks: Sequence[BlockChoice]) -> None:
        """Make ``blocks`` (one choice per active block; depth = its length) the active setting.

        Raises:
            ConfigError: a depth, width, kernel or expand the stage does not offer.
        """
        s, blocks = self.stage, tuple(blocks)
        if len(blocks) not in s.depths:
            raise ConfigError(bad_token(f"depth of the {s.type} stage", str(len(blocks)), list(s.depths)))
        for b in blocks:
            if b.width not in s.widths or b.kernel not in s.kernels or b.expand not in s.expands:
                raise ConfigError(f"block {b} is outside the {s.type} stage: widths {s.widths}, kernels "
                                  f"{s.kernels}, expands {s.expands}")
        self.active = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in self.stage.in_widths:
            raise ConfigError(f"stage input has {x.shape[1]} channels; the {self.stage.type} stage takes "
                              f"{list(self.stage.in_widths)}")
        for block, choice in zip(self.blocks, self.active):
            x = block(x, choice)
        return x

    def active_specs(self, cin: int) -> list[BlockSpec]:
        """The BlockSpecs of the active setting on a ``cin``-channel input (as ``CandidateSpace.blocks``)."""
        return stage_specs(self.stage, cin, self.active)

    def extract(self, cin: int) -> nn.Sequential:
        """A static :mod:`nasq.blocks.torch_blocks` chain of the active setting, weights copied (§5)."""
        mods = []
        for block, spec in zip(self.blocks, self.active_specs(cin)):
            static = create_block(spec)
            static.load_state_dict(static_state(block, static))
            mods.append(static)
        return nn.Sequential(*mods)
