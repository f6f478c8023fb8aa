"""SpaceEvo hyperspace, candidate-space genome and subnet genome (SpaceEvo §4.1, §4.4).

A *hyperspace* (:class:`Hyperspace`) fixes the macro structure: input resolution, stem, N elastic stages
with a stride and a wide width list each, the head, and the per-stage kernel, depth and expand lists.
A *candidate space* (:class:`SpaceGenome`, searched by aging evolution) picks per stage one block type
and a width window: a contiguous run of m widths of that stage's list. A *subnet* of a candidate space
(:class:`SubnetGenome`) picks per stage a depth and per block a width from the window, a kernel and an
expand ratio; :meth:`SubnetGenome.blocks` turns it into the :class:`~nasq.blocks.spec.BlockSpec` chain that
latency predictors and the supernet read.

Space string grammar (one line, no spaces)::

    space  := stage ("|" stage)*            # exactly N stages
    stage  := type ":" lo "-" hi            # lo, hi: first and last width of the window
    type   := mbv1 | mbv2 | mbv3 | resnet_bottleneck | resnet_bottleneck_se | fused_mb | fused_mb_se

    e.g.  fused_mb:16-40|mbv2:32-56|...

Subnet string grammar (against one candidate space)::

    subnet := sstage ("|" sstage)*          # exactly N stages
    sstage := type ":" block ("," block)*   # type must be the space's; depth = number of blocks
    block  := "c" width "_k" kernel "_e" expand

    e.g.  fused_mb:c24_k3_e4,c40_k5_e6|mbv2:c32_k3_e3|...

Numbers are ASCII digits in canonical form (no sign, no leading zero, ``e0.25`` not ``e.25``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nasq.blocks.spec import BlockSpec
from nasq.errors import ConfigError, GenomeError, bad_token
from nasq.spaces import register
from nasq.spaces.base import Space

if TYPE_CHECKING:
    from nasq.spaces.spaceevo_subnet import CandidateSpace

#: The seven block types of SpaceEvo §4.1 (the body types of :mod:`nasq.blocks`).
SPACEEVO_TYPES: tuple[str, ...] = (
    "mbv1", "mbv2", "mbv3", "resnet_bottleneck", "resnet_bottleneck_se", "fused_mb", "fused_mb_se")
#: Wide per-stage width lists of the default 6-stage hyperspace (SpaceEvo §3: INT8 wants width).
DEFAULT_WIDTHS: tuple[tuple[int, ...], ...] = (
    (16, 24, 32, 40, 48, 56, 64),
    (24, 32, 40, 48, 56, 64, 72, 80),
    (32, 48, 64, 80, 96, 112, 128),
    (64, 80, 96, 112, 128, 144, 160, 176),
    (96, 112, 128, 160, 192, 224, 256),
    (160, 192, 224, 256, 288, 320, 352, 384),
)
MIN_FINAL_RESOLUTION = 4   # derived strides stop halving before the last map gets smaller than this
MAX_HALVINGS = 5           # ImageNet convention: 224 -> 7
_NUM = re.compile(r"[1-9][0-9]*")          # ASCII only: '¹' or '١' never match
_EXPAND = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")
_BLOCK = re.compile(r"c([^_]*)_k([^_]*)_e([^_]*)")


def _fmt(expand: float) -> str:
    return f"{expand:g}"


@dataclass(frozen=True)
class Hyperspace:
    """The macro structure every candidate space shares (SpaceEvo §4.1, Table 1 shape).

    Attributes:
        resolution: input height = width; stage strides are derived from it unless ``strides`` is given.
        widths: per stage, the wide output-width list [w_min..w_max], increasing.
        window: m, widths per window (a candidate space's stage offers m widths).
        kernels: kernel sizes of every body block.
        depths: allowed blocks per stage.
        expands: expand ratios of MobileNet and fused types (hidden = cin × e).
        resnet_expands: bottleneck ratios of the ResNet types (hidden = cout × e, :func:`mid_channels`).
            0.25 is the ResNet bottleneck; 0.5 and 1.0 are the wider bottlenecks the INT8 finding (§3)
            favours. The same list as the latency data set's ``resnet_expands``, so the predictor's table
            covers them; {3, 4, 6} would give ResNet blocks 12-24× the classic hidden width.
        types: block types a stage may take.
        stem_width: output width of the 3×3 stem conv.
        classes: classifier width of the head.
        strides: stride of the stem then of each stage's first block; ``None`` derives them (see
            :func:`derive_strides`).
    """

    resolution: int = 32
    widths: tuple[tuple[int, ...], ...] = DEFAULT_WIDTHS
    window: int = 4
    kernels: tuple[int, ...] = (3, 5)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    expands: tuple[float, ...] = (3.0, 4.0, 6.0)
    resnet_expands: tuple[float, ...] = (0.25, 0.5, 1.0)
    types: tuple[str, ...] = SPACEEVO_TYPES
    stem_width: int = 16
    classes: int = 10
    strides: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "widths", tuple(tuple(int(w) for w in ws) for ws in self.widths))
        fix(self, "kernels", tuple(int(k) for k in self.kernels))
        fix(self, "depths", tuple(sorted(int(d) for d in self.depths)))
        fix(self, "expands", tuple(float(e) for e in self.expands))
        fix(self, "resnet_expands", tuple(float(e) for e in self.resnet_expands))
        fix(self, "types", tuple(self.types))
        _check_hyperspace(self)
        if self.strides is None:
            fix(self, "strides", derive_strides(self.resolution, len(self.widths)))
        else:
            fix(self, "strides", tuple(int(s) for s in self.strides))
        _check_strides(self)

    @property
    def num_stages(self) -> int:
        """N, the number of elastic stages."""
        return len(self.widths)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Stride of each stage's first block."""
        return self.strides[1:]

    def stage_resolutions(self) -> tuple[int, ...]:
        """Input resolution of each stage (after the stem and the earlier stages)."""
        res = self.resolution // self.strides[0]
        out = []
        for s in self.stage_strides:
            out.append(res)
            res //= s
        return tuple(out)

    @property
    def final_resolution(self) -> int:
        """Resolution the head sees."""
        return self.resolution // math.prod(self.strides)

    def expands_of(self, block_type: str) -> tuple[float, ...]:
        """Expand ratios a block of ``block_type`` may take (``(1.0,)`` for mbv1, which has none)."""
        if block_type == "mbv1":
            return (1.0,)
        return self.resnet_expands if block_type.startswith("resnet") else self.expands

    def num_windows(self, stage: int) -> int:
        """How many width windows stage ``stage`` offers."""
        return len(self.widths[stage]) - self.window + 1

    def stem(self) -> BlockSpec:
        """The stem block every subnet starts with."""
        return BlockSpec("stem", self.resolution, 3, self.stem_width, 3, self.strides[0])

    def head(self, cin: int) -> BlockSpec:
        """The head on a last-stage output of ``cin`` channels."""
        return BlockSpec("head", self.final_resolution, cin, self.classes, 1, 1)

    def block_specs(self) -> list[BlockSpec]:
        """Every distinct BlockSpec any candidate space of this hyperspace can contain (§4.3 predictor).

        Stem, every body block (all types, kernels, expands, input/output widths, first-of-stage and later
        positions) and a head per last-stage width; nothing else: a later block's input and output widths
        lie in one window, and later blocks exist only when a depth > 1 is allowed. The latency data set
        (:func:`nasq.latency.dataset.hyperspace_blocks`) is drawn from this list.
        """
        specs = [self.stem()]
        res = self.stage_resolutions()
        for i, widths in enumerate(self.widths):
            prev = self.widths[i - 1] if i else (self.stem_width,)
            for t in self.types:
                specs += _blocks(t, res[i], prev, widths, self.kernels, self.stage_strides[i],
                                 self.expands_of(t))
                if max(self.depths) > 1:
                    specs += [BlockSpec(t, res[i] // self.stage_strides[i], ci, co, k, 1, e)
                              for ci, co in self.window_pairs(i) for k in self.kernels
                              for e in self.expands_of(t)]
        specs += [self.head(w) for w in self.widths[-1]]
        return _distinct(specs)

    def window_pairs(self, stage: int) -> list[tuple[int, int]]:
        """(input, output) widths a later block of ``stage`` can have: both in one width window."""
        ws, m = self.widths[stage], self.window
        return sorted({(a, b) for j in range(self.num_windows(stage)) for a in ws[j:j + m]
                       for b in ws[j:j + m]})

    def sample_block_specs(self, n: int, rng: np.random.Generator) -> list[BlockSpec]:
        """``n`` distinct BlockSpecs drawn uniformly from :meth:`block_specs` (all if it has fewer)."""
        specs = self.block_specs()
        if n >= len(specs):
            return specs
        return [specs[int(i)] for i in np.sort(rng.choice(len(specs), size=n, replace=False))]


def _blocks(t: str, res: int, cins, couts, kernels, stride: int, expands) -> list[BlockSpec]:
    return [BlockSpec(t, res, ci, co, k, stride, e) for ci in cins for co in couts for k in kernels
            for e in expands]


def _distinct(specs: list[BlockSpec]) -> list[BlockSpec]:
    return list({s.key(): s for s in specs}.values())


def derive_strides(resolution: int, stages: int) -> tuple[int, ...]:
    """Stem + per-stage strides for an input ``resolution`` (SpaceEvo §4.1 macro structure).

    The net halves the resolution h = min(5, N, floor(log2(resolution / 4))) times, so the last map is
    >= 4 px: 224 -> 7 (h = 5, ImageNet), 32 -> 4 (h = 3, CIFAR-10), 16 -> 4 (h = 2). The stem takes a
    halving when h >= 4 (large inputs, ImageNet stems); the others go to evenly spaced stages from the
    second one on (stage 0 keeps the stem's resolution, like MobileNetV2's first block). For N = 6:
    CIFAR-10 gets stage strides 1,2,1,2,1,2 and 224 gets stem 2 and stages 1,2,2,1,2,2.

    Raises:
        ConfigError: the resolution is too small (< 8) to halve once.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise ConfigError(f"hyperspace resolution must be an integer >= 8, got {resolution!r}; "
                          "use e.g. 32 (CIFAR-10) or 224 (ImageNet-style)")
    halvings = min(MAX_HALVINGS, stages, math.floor(math.log2(resolution / MIN_FINAL_RESOLUTION)))
    stem = 2 if halvings >= 4 else 1
    left = halvings - (stem == 2)
    first = 1 if left <= stages - 1 else 0
    picks = {math.floor(x + 0.5) for x in np.linspace(first, stages - 1, left)} if left else set()
    return (stem,) + tuple(2 if i in picks else 1 for i in range(stages))


def _check_hyperspace(h: Hyperspace) -> None:
    if isinstance(h.resolution, bool) or not isinstance(h.resolution, (int, np.integer)) or h.resolution < 1:
        raise ConfigError(f"hyperspace resolution must be a positive integer, got {h.resolution!r}")
    if not h.widths:
        raise ConfigError("a hyperspace needs at least one stage width list")
    if h.window < 1:
        raise ConfigError(f"hyperspace window m must be >= 1, got {h.window}")
    for i, ws in enumerate(h.widths):
        if len(ws) < h.window or any(w < 1 for w in ws) or list(ws) != sorted(set(ws)):
            raise ConfigError(f"stage {i} width list {ws} must hold >= m={h.window} increasing positive "
                              "widths; widen it or lower the window")
    bad = [t for t in h.types if t not in SPACEEVO_TYPES]
    if not h.types or bad or len(set(h.types)) != len(h.types):
        raise ConfigError(bad_token("hyperspace block types", ",".join(bad) or repr(h.types),
                                    list(SPACEEVO_TYPES)))
    for name, values in (("kernels", h.kernels), ("depths", h.depths), ("expands", h.expands),
                         ("resnet_expands", h.resnet_expands)):
        if not values or len(set(values)) != len(values) or min(values) <= 0:
            raise ConfigError(f"hyperspace {name} must be distinct positive values, got {values}")
    if h.stem_width < 1 or h.classes < 1:
        raise ConfigError(f"stem_width and classes must be >= 1, got {h.stem_width}, {h.classes}")
    for t in h.types:  # every block the space can hold must be a valid BlockSpec
        for e in h.expands_of(t):
            BlockSpec(t, 8, 8, 8, h.kernels[0], 1, e)
    for k in h.kernels:
        BlockSpec("mbv1", 8, 8, 8, k, 1)


def _check_strides(h: Hyperspace) -> None:
    if len(h.strides) != h.num_stages + 1 or any(s not in (1, 2) for s in h.strides):
        raise ConfigError(f"strides {h.strides} must be the stem's then one per stage ({h.num_stages + 1} "
                          "values, each 1 or 2)")
    total = math.prod(h.strides)
    if h.resolution % total or h.resolution // total < 1:
        lo = h.resolution // total * total
        ok = [r for r in (lo, lo + total) if r >= total]
        raise ConfigError(f"resolution {h.resolution} does not survive the strides {h.strides} "
                          f"(needs a multiple of {total}); use e.g. {ok}")


# ---------------------------------------------------------------------------------------- space genome
@dataclass(frozen=True)
class SpaceGenome:
    """A candidate space: per stage a block type and the index of its width window's first width."""

    types: tuple[str, ...]
    windows: tuple[int, ...]


@dataclass(frozen=True)
class ElasticStage:
    """One elastic stage E(b, c) of a candidate space (SpaceEvo §4.1)."""

    type: str
    widths: tuple[int, ...]        # the window, m widths
    in_widths: tuple[int, ...]     # widths the previous stage (or the stem) may output
    stride: int
    resolution: int                # input resolution
    kernels: tuple[int, ...]
    depths: tuple[int, ...]
    expands: tuple[float, ...]


@register("spaceevo")
class SpaceEvoSpace(Space[SpaceGenome]):
    """Search space of candidate spaces (SpaceEvo §4.4): genome = block type + width window per stage.

    Mutation kinds: ``block`` (one stage's type changes to a different one) and ``width`` (one stage's
    window shifts by one width, within the list), so ``AgingEvolution(children_per_parent=2)`` yields the
    paper's two children per parent.

    Args:
        hyperspace: the hyperspace; ``None`` builds one from ``kwargs`` (Hyperspace fields, e.g.
            ``resolution=224``), default CIFAR-10 resolution 32.
        name: the registered name recorded in search states (``spaceevo-tiny`` for the twin), so a state
            of one space is never restored into another.
    """

    name = "spaceevo"
    mutation_kinds = ("block", "width")

    def __init__(self, hyperspace: Hyperspace | None = None, name: str = "spaceevo", **kwargs) -> None:
        if hyperspace is not None and kwargs:
            raise ConfigError("give either a Hyperspace or its fields, not both")
        self.hyperspace = hyperspace if hyperspace is not None else Hyperspace(**kwargs)
        self.name = name

    def _init_args(self) -> tuple:
        return (self.hyperspace, self.name)

    # -- codec ---------------------------------------------------------------------------------
    def encode(self, genome: SpaceGenome) -> str:
        """Write the space string (grammar in the module docstring)."""
        self.validate(genome)
        h = self.hyperspace
        return "|".join(f"{t}:{h.widths[i][w]}-{h.widths[i][w + h.window - 1]}"
                        for i, (t, w) in enumerate(zip(genome.types, genome.windows)))

    def decode(self, text: str) -> SpaceGenome:
        """Parse a space string strictly; ``GenomeError`` names the bad token and what is allowed."""
        if not isinstance(text, str):
            raise GenomeError(f"a spaceevo space must be a string, got {type(text).__name__}")
        h = self.hyperspace
        parts = text.strip().split("|")
        if len(parts) != h.num_stages:
            raise GenomeError(f"space {text!r} has {len(parts)} stages; this hyperspace needs "
                              f"{h.num_stages}, like {self.encode(self.homogeneous(h.types[0]))!r}")
        types, windows = [], []
        for i, part in enumerate(parts):
            t, sep, window = part.partition(":")
            if not sep:
                raise GenomeError(bad_token(f"stage {i}", part, "'<type>:<lo>-<hi>' like 'mbv2:24-48'", text))
            if t not in h.types:
                raise GenomeError(bad_token(f"block type of stage {i}", t, list(h.types), text))
            types.append(t)
            windows.append(self._decode_window(i, window, text))
        return SpaceGenome(tuple(types), tuple(windows))

    def _decode_window(self, i: int, token: str, text: str) -> int:
        h = self.hyperspace
        ws = h.widths[i]
        allowed = [f"{ws[j]}-{ws[j + h.window - 1]}" for j in range(h.num_windows(i))]
        lo, sep, hi = token.partition("-")
        if not (sep and _NUM.fullmatch(lo) and _NUM.fullmatch(hi)) or token not in allowed:
            raise GenomeError(bad_token(f"width window of stage {i} (m={h.window} widths of {list(ws)})",
                                        token, allowed, text))
        return allowed.index(token)

    def validate(self, genome: SpaceGenome) -> None:
        """Raise ``GenomeError`` unless ``genome`` fits this hyperspace."""
        h = self.hyperspace
        if len(genome.types) != h.num_stages or len(genome.windows) != h.num_stages:
            raise GenomeError(f"space genome has {len(genome.types)} types and {len(genome.windows)} "
                              "windows; "
                              f"this hyperspace needs {h.num_stages} of each")
        for i, (t, w) in enumerate(zip(genome.types, genome.windows)):
            if t not in h.types:
                raise GenomeError(bad_token(f"block type of stage {i}", t, list(h.types)))
            if not 0 <= w < h.num_windows(i):
                raise GenomeError(f"window index {w} of stage {i} must be in 0..{h.num_windows(i) - 1}")

    # -- sampling and mutation (SpaceEvo §4.4) --------------------------------------------------
    def random(self, rng: np.random.Generator) -> SpaceGenome:
        """Draw every stage's type and window uniformly."""
        h = self.hyperspace
        types = tuple(h.types[int(v)] for v in rng.integers(len(h.types), size=h.num_stages))
        windows = tuple(int(rng.integers(h.num_windows(i))) for i in range(h.num_stages))
        return SpaceGenome(types, windows)

    def homogeneous(self, block_type: str, window: int = 0) -> SpaceGenome:
        """The space with ``block_type`` in every stage and window ``window`` (clipped per stage)."""
        h = self.hyperspace
        if block_type not in h.types:
            raise GenomeError(bad_token("block type", block_type, list(h.types)))
        return SpaceGenome((block_type,) * h.num_stages,
                           tuple(min(window, h.num_windows(i) - 1) for i in range(h.num_stages)))

    def mutate(self, genome: SpaceGenome, rng: np.random.Generator, kind: str | None = None) -> SpaceGenome:
        """``block``: one stage's type becomes a different type; ``width``: one stage's window moves one
        width up or down (SpaceEvo §4.4), each drawn uniformly."""
        kind = self._check_kind(kind)
        h = self.hyperspace
        if kind == "block":
            if len(h.types) < 2:
                raise ConfigError("the block mutation needs a hyperspace with >= 2 block types")
            i = int(rng.integers(h.num_stages))
            choices = [t for t in h.types if t != genome.types[i]]
            types = list(genome.types)
            types[i] = choices[int(rng.integers(len(choices)))]
            return SpaceGenome(tuple(types), genome.windows)
        movable = [i for i in range(h.num_stages) if h.num_windows(i) > 1]
        if not movable:
            raise ConfigError("the width mutation needs a stage with more widths than the window m")
        i = movable[int(rng.integers(len(movable)))]
        steps = [s for s in (-1, 1) if 0 <= genome.windows[i] + s < h.num_windows(i)]
        windows = list(genome.windows)
        windows[i] += steps[int(rng.integers(len(steps)))]
        return SpaceGenome(genome.types, tuple(windows))

    # -- candidate spaces ------------------------------------------------------------------------
    def candidate(self, genome: SpaceGenome | str) -> CandidateSpace:
        """The candidate space of ``genome`` (a genome or its string): its elastic stages and subnets."""
        from nasq.spaces.spaceevo_subnet import CandidateSpace

        genome = self.decode(genome) if isinstance(genome, str) else genome
        self.validate(genome)
        h = self.hyperspace
        res = h.stage_resolutions()
        stages, prev = [], (h.stem_width,)
        for i, (t, w) in enumerate(zip(genome.types, genome.windows)):
            widths = h.widths[i][w:w + h.window]
            stages.append(ElasticStage(t, widths, prev, h.stage_strides[i], res[i], h.kernels, h.depths,
                                       h.expands_of(t)))
            prev = widths
        return CandidateSpace(h, tuple(stages), self.encode(genome))


@register("spaceevo-tiny")
def spaceevo_tiny(**kwargs) -> SpaceEvoSpace:
    """Test twin of ``spaceevo``: 3 stages at resolution 16, small widths, window 2, depth 1–2."""
    base = {"resolution": 16, "widths": ((8, 16, 24), (16, 24, 32), (24, 32, 40)), "window": 2,
            "kernels": (3, 5), "depths": (1, 2), "expands": (3.0, 6.0), "resnet_expands": (0.5, 1.0),
            "stem_width": 8}
    return SpaceEvoSpace(Hyperspace(**{**base, **kwargs}), name="spaceevo-tiny")


def space_from_name(name: str, **kwargs) -> SpaceEvoSpace:
    """``spaceevo``, ``spaceevo-tiny`` or ``<name>:RES`` (e.g. ``spaceevo:224``) -> the space.

    Raises:
        ConfigError: an unknown name or a resolution that is not a positive ASCII integer.
    """
    base, sep, res = name.partition(":")
    factories = {"spaceevo": SpaceEvoSpace, "spaceevo-tiny": spaceevo_tiny}
    if base not in factories:
        raise ConfigError(bad_token("spaceevo hyperspace", base, sorted(factories)))
    if sep:
        if not _NUM.fullmatch(res):
            raise ConfigError(bad_token("resolution", res, "a positive integer such as 32 or 224", name))
        kwargs = {**kwargs, "resolution": int(res)}
    return factories[base](**kwargs)
