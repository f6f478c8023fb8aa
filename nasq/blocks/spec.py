"""Block specifications: one typed, frozen description per block and its canonical key.

SpaceEvo (Sec. 3, "block-wise search space") describes a network as a chain of blocks, each one of a few
operator types with an input resolution, input/output widths, a kernel size, a stride and an expand ratio;
latency tables and predictors are keyed by that description. ``BlockSpec.key()`` is the one place that
builds the key; ``BlockSpec.from_key`` parses it strictly. Op-level cost estimates (MACs, parameters,
memory traffic) live in :mod:`nasq.blocks.cost`; :func:`spec_features` is re-exported here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nasq.errors import GenomeError, bad_token

BLOCK_TYPES: tuple[str, ...] = (
    "mbv1", "mbv2", "mbv3", "resnet_bottleneck", "resnet_bottleneck_se",
    "fused_mb", "fused_mb_se", "stem", "head",
)
KERNELS: tuple[int, ...] = (1, 3, 5, 7)
STRIDES: tuple[int, ...] = (1, 2)
MAX_EXPAND = 16.0
#: Types whose expand ratio has no meaning; their ``expand`` must stay 1 so each block has one key.
NO_EXPAND: frozenset[str] = frozenset({"mbv1", "stem", "head"})
#: Types with a residual connection when ``stride == 1 and cin == cout``.
RESIDUAL_TYPES: frozenset[str] = frozenset(
    {"mbv2", "mbv3", "fused_mb", "fused_mb_se", "resnet_bottleneck", "resnet_bottleneck_se"})
#: Token prefixes of a key, in order after the type.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("r", "resolution"), ("i", "cin"), ("o", "cout"), ("k", "kernel"), ("s", "stride"), ("e", "expand"))
_INT_RE = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class BlockSpec:
    """One block of a SpaceEvo-style chain (Sec. 3): operator type plus its shape settings.

    Attributes:
        type: one of :data:`BLOCK_TYPES`.
        resolution: input height = width in pixels.
        cin: input channels.
        cout: output channels (classes for ``head``).
        kernel: spatial kernel of the block's main conv (1 for ``head``).
        stride: 1 or 2 (1 for ``head``).
        expand: expand ratio; hidden width is :func:`mid_channels`.
    """

    type: str
    resolution: int
    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    expand: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "expand", float(self.expand))
        _validate(self)

    def key(self) -> str:
        """Return the canonical key, e.g. ``mbv2-r56-i32-o32-k3-s1-e6``."""
        return block_key(self)

    @classmethod
    def from_key(cls, key: str) -> "BlockSpec":
        """Parse a canonical key strictly; raise GenomeError naming the bad token and the allowed values."""
        return parse_key(key)

    @property
    def out_resolution(self) -> int:
        """Output height = width (1 for ``head``)."""
        return 1 if self.type == "head" else math.ceil(self.resolution / self.stride)

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output (identity shortcut)."""
        return self.type in RESIDUAL_TYPES and self.stride == 1 and self.cin == self.cout


def _fmt_expand(expand: float) -> str:
    return f"{expand:g}"


def block_key(spec: BlockSpec) -> str:
    """Build the canonical key of ``spec``; the only function that does (Sec. 3 latency-table keys)."""
    return (f"{spec.type}-r{spec.resolution}-i{spec.cin}-o{spec.cout}-k{spec.kernel}"
            f"-s{spec.stride}-e{_fmt_expand(spec.expand)}")


def parse_key(key: str) -> BlockSpec:
    """Parse ``key`` into a :class:`BlockSpec`; every token must be present, in order and canonical.

    Raises:
        GenomeError: naming the first bad token and what is allowed there.
    """
    if not isinstance(key, str):
        raise GenomeError(f"block key must be a string, got {type(key).__name__}")
    tokens = key.strip().split("-")
    if tokens[0] not in BLOCK_TYPES:
        raise GenomeError(bad_token("block type", tokens[0], list(BLOCK_TYPES), key))
    want = [p + "<value>" for p, _ in _FIELDS]
    if len(tokens) != 1 + len(_FIELDS):
        raise GenomeError(f"block key {key!r} has {len(tokens)} tokens; expected "
                          f"'<type>-{'-'.join(want)}', e.g. 'mbv2-r56-i32-o32-k3-s1-e6'")
    values: dict[str, object] = {}
    for tok, (prefix, name) in zip(tokens[1:], _FIELDS):
        body = tok[len(prefix):]
        if not tok.startswith(prefix) or not body:
            raise GenomeError(bad_token(f"{name} token", tok, f"'{prefix}<value>'", key))
        if name == "expand":
            values[name] = _parse_expand(body, tok, key)
        elif _INT_RE.fullmatch(body):
            values[name] = int(body)
        else:
            raise GenomeError(bad_token(f"{name} token", tok, f"'{prefix}' + a positive integer", key))
    return BlockSpec(tokens[0], **values)  # type: ignore[arg-type]


def _parse_expand(body: str, tok: str, key: str) -> float:
    try:
        value = float(body)
    except ValueError:
        raise GenomeError(bad_token("expand token", tok, "'e' + a positive number such as e6 or e0.25", key))
    if not math.isfinite(value) or _fmt_expand(value) != body:
        raise GenomeError(bad_token("expand token", tok, f"the canonical form 'e{_fmt_expand(value)}'", key))
    return value


def _validate(spec: BlockSpec) -> None:
    where = f"{spec.type}-r{spec.resolution}-i{spec.cin}-o{spec.cout}-k{spec.kernel}-s{spec.stride}"
    if spec.type not in BLOCK_TYPES:
        raise GenomeError(bad_token("block type", spec.type, list(BLOCK_TYPES)))
    for name in ("resolution", "cin", "cout", "kernel", "stride"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenomeError(f"block {where}: {name} must be a positive integer, got {value!r}")
    kernels, strides = ((1,), (1,)) if spec.type == "head" else (KERNELS, STRIDES)
    if spec.kernel not in kernels:
        raise GenomeError(bad_token("kernel", f"k{spec.kernel}", [f"k{k}" for k in kernels], where))
    if spec.stride not in strides:
        raise GenomeError(bad_token("stride", f"s{spec.stride}", [f"s{s}" for s in strides], where))
    if not (0.0 < spec.expand <= MAX_EXPAND) or not math.isfinite(spec.expand):
        raise GenomeError(f"block {where}: expand must be in (0, {MAX_EXPAND:g}], got {spec.expand!r}")
    if spec.type in NO_EXPAND and spec.expand != 1.0:
        raise GenomeError(f"block {where}: type {spec.type!r} has no expand ratio; use e1")


def mid_channels(spec: BlockSpec) -> int:
    """Hidden width of a block (Sec. 3 expand ratio).

    MobileNet and fused blocks expand the input (``round(cin * expand)``); ResNet bottlenecks follow the
    ResNet/Once-for-All convention and size the bottleneck from the output (``round(cout * expand)``).
    Blocks without an expansion return ``cin``.
    """
    if spec.type in ("mbv2", "mbv3", "fused_mb", "fused_mb_se"):
        return max(1, round(spec.cin * spec.expand))
    if spec.type in ("resnet_bottleneck", "resnet_bottleneck_se"):
        return max(1, round(spec.cout * spec.expand))
    return spec.cin


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going below 90% of it (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def se_channels(channels: int) -> int:
    """Squeeze width of the squeeze-and-excitation module on ``channels`` (MobileNetV3 rule: C/4, mult of 8)."""
    return make_divisible(channels / 4, 8)


def check_chain(specs: list[BlockSpec] | tuple[BlockSpec, ...]) -> None:
    """Check that consecutive blocks fit (widths and resolutions) and ``head`` comes last.

    Raises:
        GenomeError: naming the first pair of blocks that does not fit.
    """
    if not specs:
        raise GenomeError("a block chain needs at least one BlockSpec")
    for i, (a, b) in enumerate(zip(specs, specs[1:])):
        if a.type == "head":
            raise GenomeError(f"block {i} ({a.key()}) is a head; a head must be the last block")
        if b.cin != a.cout or b.resolution != a.out_resolution:
            raise GenomeError(
                f"blocks {i} and {i + 1} do not fit: {a.key()} gives {a.cout} channels at "
                f"{a.out_resolution}px but {b.key()} expects {b.cin} at {b.resolution}px; fix i/r of the second")


def chain_key(specs: list[BlockSpec] | tuple[BlockSpec, ...]) -> str:
    """Canonical key of a chain: block keys joined by ``+``."""
    return "+".join(s.key() for s in specs)


def spec_features(spec: BlockSpec) -> dict[str, float]:
    """Numeric features of one block for latency prediction (Sec. 4 predictor; see :mod:`nasq.blocks.cost`)."""
    from nasq.blocks.cost import spec_features as _features

    return _features(spec)
