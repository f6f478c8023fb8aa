"""PyTorch modules of the SpaceEvo block types, registered by name (SpaceEvo Sec. 3 block-wise space).

Each block is a plain ``nn.Module`` with explicit typed constructor arguments, so the SpaceEvo search space
can build them directly; the registry maps a :class:`~nasq.blocks.spec.BlockSpec` type to a factory.
Convolutions carry BatchNorm (bias-free conv + BN), which ONNX export in eval mode folds into the conv.
The op structure matches :func:`nasq.blocks.cost.block_ops` exactly.
"""

from __future__ import annotations

import fnmatch
from typing import Callable

import torch
from torch import nn

from nasq.blocks.spec import BlockSpec, check_chain, se_channels
from nasq.errors import ConfigError, GenomeError, bad_token

BlockFactory = Callable[[BlockSpec], nn.Module]
_REGISTRY: dict[str, BlockFactory] = {}
_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "relu6": lambda: nn.ReLU6(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True), "none": nn.Identity,
}


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, 'same'-style padding k//2) + BatchNorm2d + activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str = "relu") -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), _ACTS[act]())


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce + ReLU, 1x1 expand + gate, channel-wise scale."""

    def __init__(self, channels: int, squeeze: int, gate: str = "sigmoid") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise kxk (stride) + pointwise 1x1, ReLU6 after each."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.dw = ConvBNAct(cin, cin, kernel, stride, groups=cin, act="relu6")
        self.pw = ConvBNAct(cin, cout, 1, act="relu6")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand (skipped at expand 1), depthwise kxk, [SE], linear 1x1 project."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, expand: float = 6.0,
                 act: str = "relu6", use_se: bool = False) -> None:
        super().__init__()
        mid = max(1, round(cin * expand))
        self.expand = ConvBNAct(cin, mid, 1, act=act) if expand != 1.0 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid, se_channels(mid), "hsigmoid") if use_se else nn.Identity()
        self.project = ConvBNAct(mid, cout, 1, act="none")
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class FusedMBConv(nn.Module):
    """Fused-MBConv (EfficientNetV2): kxk expand conv (stride), [SE], linear 1x1 project, residual."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, expand: float = 4.0,
                 use_se: bool = False) -> None:
        super().__init__()
        mid = max(1, round(cin * expand))
        self.fused = ConvBNAct(cin, mid, kernel, stride, act="relu6")
        self.se = SqueezeExcite(mid, se_channels(mid), "sigmoid") if use_se else nn.Identity()
        self.project = ConvBNAct(mid, cout, 1, act="none")
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.fused(x)))
        return x + y if self.residual else y


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, kxk (stride), 1x1 to cout, [SE], shortcut add, ReLU.

    The bottleneck width is ``round(cout * expand)``; the shortcut is a strided 1x1 conv + BN unless the
    block keeps shape.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, expand: float = 0.25,
                 use_se: bool = False) -> None:
        super().__init__()
        mid = max(1, round(cout * expand))
        self.conv1 = ConvBNAct(cin, mid, 1, act="relu")
        self.conv2 = ConvBNAct(mid, mid, kernel, stride, act="relu")
        self.conv3 = ConvBNAct(mid, cout, 1, act="none")
        self.se = SqueezeExcite(cout, se_channels(cout), "sigmoid") if use_se else nn.Identity()
        keep = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if keep else ConvBNAct(cin, cout, 1, stride, act="none")
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.se(self.conv3(self.conv2(self.conv1(x)))))


class Stem(ConvBNAct):
    """Network stem: one kxk conv (stride) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 2) -> None:
        super().__init__(cin, cout, kernel, stride, act="relu")


class Head(nn.Module):
    """Classifier head: global average pool + linear layer to ``num_classes``."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def register_block(name: str, *, override: bool = False) -> Callable[[BlockFactory], BlockFactory]:
    """Register a factory ``BlockSpec -> nn.Module`` under a block type name (decorator)."""
    def deco(factory: BlockFactory) -> BlockFactory:
        if name in _REGISTRY and not override:
            raise ConfigError(f"block type {name!r} is already registered; pass override=True to replace it")
        _REGISTRY[name] = factory
        return factory
    return deco


def list_blocks(pattern: str = "*") -> list[str]:
    """Sorted names of registered block types matching a shell-style ``pattern`` (e.g. ``"mb*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def create_block(spec: BlockSpec | str) -> nn.Module:
    """Build the module of one block from a spec or its key (Sec. 3 block types)."""
    if isinstance(spec, str):
        spec = BlockSpec.from_key(spec)
    if spec.type not in _REGISTRY:
        raise GenomeError(bad_token("block type", spec.type, list_blocks()))
    return _REGISTRY[spec.type](spec)


build_block = create_block


def build_chain(specs: list[BlockSpec] | tuple[BlockSpec, ...]) -> nn.Sequential:
    """Build a chain of blocks (typically stem ... head) after checking that consecutive blocks fit."""
    specs = [BlockSpec.from_key(s) if isinstance(s, str) else s for s in specs]
    check_chain(specs)
    return nn.Sequential(*(create_block(s) for s in specs))


def input_shape(specs: list[BlockSpec] | tuple[BlockSpec, ...], batch: int = 1) -> tuple[int, int, int, int]:
    """NCHW input shape of a chain's first block."""
    return (batch, specs[0].cin, specs[0].resolution, specs[0].resolution)


def _register_defaults() -> None:
    reg = lambda name, fn: register_block(name)(fn)  # noqa: E731
    reg("stem", lambda s: Stem(s.cin, s.cout, s.kernel, s.stride))
    reg("head", lambda s: Head(s.cin, s.cout))
    reg("mbv1", lambda s: DepthwiseSeparable(s.cin, s.cout, s.kernel, s.stride))
    reg("mbv2", lambda s: InvertedResidual(s.cin, s.cout, s.kernel, s.stride, s.expand, "relu6", False))
    reg("mbv3", lambda s: InvertedResidual(s.cin, s.cout, s.kernel, s.stride, s.expand, "hswish", True))
    reg("fused_mb", lambda s: FusedMBConv(s.cin, s.cout, s.kernel, s.stride, s.expand, False))
    reg("fused_mb_se", lambda s: FusedMBConv(s.cin, s.cout, s.kernel, s.stride, s.expand, True))
    reg("resnet_bottleneck", lambda s: Bottleneck(s.cin, s.cout, s.kernel, s.stride, s.expand, False))
    reg("resnet_bottleneck_se", lambda s: Bottleneck(s.cin, s.cout, s.kernel, s.stride, s.expand, True))


_register_defaults()
