"""Which stage settings the accuracy table evaluates, and how the others are estimated (SpaceEvo §4.5).

A stage setting is an input width plus a tuple of block choices (its length is the depth), the row
format of :meth:`nasq.spaces.spaceevo_subnet.CandidateSpace.stage_settings`, keyed by
:func:`nasq.spaces.spaceevo_subnet.setting_key`. The settings of one (stage, block type) are
combinatorial: |in widths| × Σ_d (|widths| × |kernels| × |expands|)^d, about 4·10^7 per (stage, type) in
the default hyperspace (7 × 48^4), so the table cannot hold them all.

**Decision.** The build evaluates, per (stage, block type):

1. every *uniform* setting: each input width × each depth × each single block choice (width, kernel,
   expand) repeated over the depth: |in| × |depths| × |widths| × |kernels| × |expands| rows
   (72 for a later stage of the tiny hyperspace; 1344 for a default stage, 448 for mbv1, about 51k rows
   for the whole default table);
2. ``mixed_rows`` random *mixed* settings (depth ≥ 2, at least two different block choices), held out:
   they measure the estimator below and are table rows like any other.

A setting that is not a row (a mixed setting) is answered by the **uniform-mean estimator**
(:func:`estimate_losses`, name :data:`ESTIMATOR`): the mean, over its blocks j, of the loss of the uniform
setting with the same input width and depth whose every block is block j's choice,
``L̂(i, c_1..c_d) = (1/d) Σ_j L(i, c_j, …, c_j)``. It is exact when a stage's loss is additive over its
blocks (L = base + Σ_j f(c_j): then L(i, c, …, c) = base + d·f(c)), the block-wise assumption DNA and
DONNA make one level up. Its error on the held-out mixed rows (mean relative error and Kendall τ) is
written per (stage, type) into ``lut.json`` (``uniform_mean_error``).

Measured on the digits build of the tiny hyperspace (8 held-out mixed rows per part, 21 parts): mean
relative error 12 % for both this estimator and the ridge regression of :mod:`nasq.bkd.table` (fitted
without the mixed rows), Kendall τ pooled 0.34 here vs 0.44 for the ridge, which wins in 16 of 21 parts;
both under-estimate mixed settings by ~0.07 NSR. So ``lut.json`` names the ridge as the table's estimator
(:data:`nasq.bkd.build.TABLE_ESTIMATOR`); this one stays selectable (``"estimator": "uniform-mean-v1"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from nasq.errors import ConfigError
from nasq.spaces.spaceevo import ElasticStage
from nasq.spaces.spaceevo_subnet import BlockChoice, setting_key

ESTIMATOR = "uniform-mean-v1"
#: columns of a table row (``lut.csv`` and the build's part files): the (stage, block type), the setting's
#: :func:`setting_key`, its NSR losses in fp32 and INT8, and its FLOPs (MACs) and parameters
COLUMNS = ("stage", "block_type", "setting", "nsr_fp32", "nsr_int8", "flops", "params")
LOSS_COLUMNS = ("nsr_fp32", "nsr_int8")
_SETTING = re.compile(r"i([1-9][0-9]*):(.+)")
_BLOCK = re.compile(r"c([1-9][0-9]*)_k([1-9][0-9]*)_e([0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True)
class StageSetting:
    """One setting of an elastic stage: input width and the active blocks (SpaceEvo §4.5 LUT row)."""

    cin: int
    blocks: tuple[BlockChoice, ...]

    def row(self, max_depth: int) -> np.ndarray:
        """The numeric row of :meth:`CandidateSpace.stage_settings` (0 beyond the depth)."""
        d = len(self.blocks)
        if d > max_depth:
            raise ConfigError(f"setting of depth {d} does not fit rows of depth {max_depth}")
        pad = [0.0] * (max_depth - d)
        return np.array([self.cin, d, *[b.width for b in self.blocks], *pad, *[b.kernel for b in self.blocks],
                         *pad, *[b.expand for b in self.blocks], *pad], np.float64)

    def key(self, max_depth: int) -> str:
        """The canonical :func:`setting_key` of this setting."""
        return setting_key(self.row(max_depth))

    @property
    def uniform(self) -> bool:
        """All blocks make the same choice."""
        return len(set(self.blocks)) <= 1


def setting_from_row(row: np.ndarray | Sequence[float]) -> StageSetting:
    """The :class:`StageSetting` of a numeric setting row (inverse of :meth:`StageSetting.row`)."""
    v = [float(x) for x in row]
    d, dmax = int(v[1]), (len(v) - 2) // 3
    if len(v) != 2 + 3 * dmax or not 1 <= d <= dmax:
        raise ConfigError(f"stage setting row of length {len(v)} with depth {v[1] if len(v) > 1 else '?'} "
                          "is not (cin, depth, D widths, D kernels, D expands)")
    blocks = tuple(BlockChoice(int(v[2 + j]), int(v[2 + dmax + j]), v[2 + 2 * dmax + j]) for j in range(d))
    return StageSetting(int(v[0]), blocks)


def block_choices(stage: ElasticStage) -> list[BlockChoice]:
    """Every single-block choice (width, kernel, expand) of ``stage``."""
    return [BlockChoice(w, k, e) for w, k, e in product(stage.widths, stage.kernels, stage.expands)]


def uniform_settings(stage: ElasticStage) -> list[StageSetting]:
    """Every input width × depth × uniform block choice of ``stage`` (the table's complete part)."""
    return [StageSetting(cin, (c,) * d) for cin in stage.in_widths for d in stage.depths
            for c in block_choices(stage)]


def mixed_settings(stage: ElasticStage, n: int, rng: np.random.Generator) -> list[StageSetting]:
    """Up to ``n`` distinct random settings of depth ≥ 2 with at least two different block choices."""
    depths = [d for d in stage.depths if d >= 2]
    choices = block_choices(stage)
    if not depths or len(choices) < 2 or n <= 0:
        return []
    out: dict[StageSetting, None] = {}
    for _ in range(20 * n):  # bounded: a tiny stage may hold fewer than n mixed settings
        d = int(rng.choice(depths))
        s = StageSetting(int(rng.choice(stage.in_widths)),
                         tuple(choices[int(i)] for i in rng.integers(len(choices), size=d)))
        if not s.uniform:
            out[s] = None
        if len(out) == n:
            break
    return list(out)


def random_setting(stage: ElasticStage, rng: np.random.Generator) -> StageSetting:
    """A setting drawn like ``sample_subnets`` draws a stage: depth, then each block's choice uniformly."""
    d = int(rng.choice(stage.depths))
    blocks = tuple(BlockChoice(int(rng.choice(stage.widths)), int(rng.choice(stage.kernels)),
                               float(rng.choice(stage.expands))) for _ in range(d))
    return StageSetting(int(rng.choice(stage.in_widths)), blocks)


def estimate_losses(table: Mapping[str, float], rows: np.ndarray) -> np.ndarray:
    """Uniform-mean estimate of each setting row's loss (module docstring, :data:`ESTIMATOR`).

    Args:
        table: ``setting_key -> loss`` of one (stage, block type), holding every uniform setting.
        rows: (n, 2 + 3D) setting rows.

    Raises:
        ConfigError: a uniform setting the estimate needs is missing (the table was built for another
            hyperspace).
    """
    rows = np.atleast_2d(np.asarray(rows, np.float64))
    dmax = (rows.shape[1] - 2) // 3
    out = np.empty(len(rows))
    for r, row in enumerate(rows):
        s = setting_from_row(row)
        keys = [StageSetting(s.cin, (b,) * len(s.blocks)).key(dmax) for b in s.blocks]
        missing = [k for k in keys if k not in table]
        if missing:
            raise ConfigError(f"the accuracy table has no uniform setting {missing[0]!r}; rebuild it for this "
                              "hyperspace (nasq lut build --hyperspace ...)")
        out[r] = float(np.mean([table[k] for k in keys]))
    return out


def estimator_error(table: Mapping[str, float], held_out: Mapping[str, float], max_depth: int) -> dict:
    """Mean relative error and Kendall τ of :func:`estimate_losses` on held-out (mixed) rows."""
    if not held_out:
        return {"rows": 0, "mean_rel_error": None, "kendall_tau": None}
    from scipy.stats import kendalltau

    keys = list(held_out)
    rows = np.stack([parse_setting(k, max_depth) for k in keys])
    est, real = estimate_losses(table, rows), np.array([held_out[k] for k in keys])
    tau = kendalltau(est, real).statistic if len(keys) > 1 else float("nan")
    return {"rows": len(keys), "mean_rel_error": float(np.mean(np.abs(est - real) / np.maximum(real, 1e-12))),
            "kendall_tau": None if not np.isfinite(tau) else float(tau)}


def parse_setting(text: str, max_depth: int) -> np.ndarray:
    """Inverse of :func:`setting_key`: the numeric setting row (2 + 3D floats) of ``text`` (§4.5 rows).

    The one parser of the key grammar ``i<cin>:c<width>_k<kernel>_e<expand>,...`` (the table reader and
    the estimator's error both use it); only the canonical form :func:`setting_key` writes is accepted.

    Raises:
        ConfigError: (a ``ValueError``) ``text`` is not a canonical setting key or is deeper than
            ``max_depth``.
    """
    m = _SETTING.fullmatch(text)
    blocks = [_BLOCK.fullmatch(b) for b in m.group(2).split(",")] if m else []
    if not m or not all(blocks) or len(blocks) > max_depth:
        raise ConfigError(f"setting {text!r} is not like 'i16:c24_k3_e4,c40_k5_e6' with <= {max_depth} "
                          "blocks")
    d = max_depth
    row = np.zeros(2 + 3 * d)
    row[0], row[1] = float(m.group(1)), float(len(blocks))
    for j, b in enumerate(blocks):
        row[2 + j], row[2 + d + j], row[2 + 2 * d + j] = (float(v) for v in b.groups())
    if setting_key(row) != text:
        raise ConfigError(f"setting {text!r} is not in canonical form (expected {setting_key(row)!r})")
    return row


#: former name of :func:`parse_setting` (the same function)
row_of_key = parse_setting


__all__ = ["COLUMNS", "ESTIMATOR", "LOSS_COLUMNS", "StageSetting", "block_choices", "estimate_losses",
           "estimator_error", "mixed_settings", "parse_setting", "random_setting", "row_of_key",
           "setting_from_row", "uniform_settings"]
