"""Q-T score of a candidate space (SpaceEvo §4.2): quality of its best INT8 subnets under latency limits.

Pure numpy, no Ray. Given a candidate space, a block-wise KD accuracy table and an INT8 latency source:

1. draw ``n_subnets`` subnets (:meth:`CandidateSpace.sample_subnets`, seeded) and keep the distinct ones;
2. price every distinct block of the space once (one call to ``latency``), then a subnet's latency is the
   sum of its blocks' rows (look-ups and sums over index arrays);
3. query the table once per distinct stage setting; a subnet's loss is the sum of its stages' INT8 NSR
   losses (SpaceEvo §4.5: "the loss of a model is the sum of its blocks' losses");
4. per limit T_i, keep the subnets with latency <= T_i and score the top ``top_k`` of them.

Two variants (``variant=``):

``"paper"`` (default; the equation of §4.2): the estimated accuracy of a subnet is the inverse of its loss,
``acc = 1 / L`` with ``L = Σ_stages NSR_int8`` (lower loss, higher accuracy; the paper inverts the summed
loss to rank models). Q = Σ_i mean(acc of the top-k subnets under T_i). A limit no subnet meets adds
``penalty`` (default 0: a space with no subnet under the limit has no accuracy to offer there), so the
score is always finite and meeting a limit never scores below missing it.

``"code"`` (the scorer of the paper's public repository): per limit, ``score_i = 1 / (lat_loss × L̄)``
with L̄ the mean summed loss of the top-k feasible subnets and ``lat_loss = max(1, (t / p)^a)``, p the
fraction of sampled subnets under T_i (+1e-5), t = ``lat_loss_t`` = 0.1, a = ``lat_loss_a`` = 0.01; an unmet
limit uses L̄ = 1e5. It differs from the paper's equation in three ways: it averages losses before
inverting (1 / mean L instead of mean 1 / L), it multiplies in a soft factor that rewards spaces where
many subnets (>= 10 %) meet the limit, and its repository draws 100k samples with top 50 by picking one
table row per stage independently (stage input widths need not match); here both variants use the same
consistent subnets, so only the formula differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nasq.blocks.spec import BlockSpec
from nasq.errors import ConfigError, bad_token
from nasq.spaces.spaceevo_subnet import CandidateSpace, SubnetBatch, setting_key, unique_rows

VARIANTS = ("paper", "code")
LOSS_FLOOR = 1e-9        # a summed loss below this is treated as this (keeps 1 / L finite)
CODE_EMPTY_LOSS = 1e5    # the repository's stand-in loss of a limit nobody meets


class AccuracyTable(Protocol):
    """Block-wise KD accuracy table (SpaceEvo §4.5): INT8 NSR loss of stage settings."""

    def stage_losses(self, stage: int, block_type: str, settings: np.ndarray) -> np.ndarray:
        """Loss of each setting row (:meth:`CandidateSpace.stage_settings`) of ``block_type`` at ``stage``."""


class BlockLatency(Protocol):
    """INT8 latency of blocks, e.g. :class:`nasq.latency.predictor.LatencyPredictor`.

    A source may also offer ``predict_in_chain(specs)``: each block's latency as part of a chain that
    continues after it (the block plus the boundary overhead a chain pays after every non-final block,
    §4.3 calibration); it is preferred when present, since every body block of a subnet is followed by
    another block and the head comes last. Without it, a subnet costs the plain sum of its blocks.
    """

    def predict(self, specs: Sequence[BlockSpec]) -> np.ndarray:
        """Latency in ms of each block."""


LutLike = AccuracyTable | Callable[[int, str, np.ndarray], np.ndarray] | Mapping[tuple[int, str, str], float]
LatencyLike = BlockLatency | Callable[[list[BlockSpec]], np.ndarray] | Mapping[str, float]


@dataclass(frozen=True)
class QTResult:
    """A Q-T score and how it was made up."""

    score: float                       # Σ over limits
    per_limit: tuple[float, ...]       # each limit's contribution
    feasible: tuple[int, ...]          # distinct subnets under each limit
    subnets: int                       # distinct subnets scored


def qt_score(space: CandidateSpace, constraints_ms: Sequence[float], lut: LutLike, latency: LatencyLike, *,
             n_subnets: int = 5000, top_k: int = 20, seed: int = 0, variant: str = "paper",
             penalty: float = 0.0, lat_loss_t: float = 0.1, lat_loss_a: float = 0.01) -> float:
    """Q-T score of ``space`` under the INT8 latency limits ``constraints_ms`` (SpaceEvo §4.2).

    Args:
        space: the candidate space (:meth:`nasq.spaces.spaceevo.SpaceEvoSpace.candidate`).
        constraints_ms: latency limits T_i in ms.
        lut: accuracy table: an object with ``stage_losses``, a callable of the same signature, or a
            mapping ``(stage, block_type, setting_key) -> loss`` (:func:`setting_key`).
        latency: block latencies: an object with ``predict(specs)``, a callable ``specs -> ms`` or a
            mapping ``block key -> ms``.
        n_subnets: subnets drawn (duplicates are dropped before scoring).
        top_k: best subnets averaged per limit.
        seed: seed of the subnet draw; equal seeds give equal scores.
        variant: ``"paper"`` or ``"code"`` (module docstring).
        penalty: contribution of a limit no subnet meets (``"paper"`` variant).
        lat_loss_t, lat_loss_a: the ``"code"`` variant's latency-loss constants.
    """
    return qt_details(space, constraints_ms, lut, latency, n_subnets=n_subnets, top_k=top_k, seed=seed,
                      variant=variant, penalty=penalty, lat_loss_t=lat_loss_t, lat_loss_a=lat_loss_a).score


def qt_details(space: CandidateSpace, constraints_ms: Sequence[float], lut: LutLike, latency: LatencyLike, *,
               n_subnets: int = 5000, top_k: int = 20, seed: int = 0, variant: str = "paper",
               penalty: float = 0.0, lat_loss_t: float = 0.1, lat_loss_a: float = 0.01) -> QTResult:
    """:func:`qt_score` with the per-limit contributions and feasible counts."""
    limits = _check(constraints_ms, top_k, variant, penalty)
    batch = space.sample_subnets(n_subnets, np.random.default_rng(seed)).unique()
    lat = subnet_latencies(space, batch, latency)
    loss = np.maximum(subnet_losses(space, batch, lut), LOSS_FLOOR)
    order = np.argsort(loss, kind="stable")          # best (lowest loss) first, ties by draw order
    lat_sorted, loss_sorted = lat[order], loss[order]
    parts, counts = [], []
    for limit in limits:
        ok = lat_sorted <= limit
        top = loss_sorted[ok][:top_k]
        counts.append(int(ok.sum()))
        if variant == "paper":
            parts.append(float(np.mean(1.0 / top)) if len(top) else float(penalty))
        else:
            p = ok.mean() + 1e-5
            lat_loss = max(1.0, (lat_loss_t / p) ** lat_loss_a)
            parts.append(1.0 / (lat_loss * (float(top.mean()) if len(top) else CODE_EMPTY_LOSS)))
    return QTResult(float(sum(parts)), tuple(parts), tuple(counts), len(batch))


def _check(constraints_ms: Sequence[float], top_k: int, variant: str, penalty: float) -> list[float]:
    if variant not in VARIANTS:
        raise ConfigError(bad_token("Q-T score variant", variant, list(VARIANTS)))
    limits = [float(t) for t in np.atleast_1d(np.asarray(constraints_ms, dtype=np.float64))]
    if not limits or not all(np.isfinite(t) and t > 0 for t in limits):
        raise ConfigError(f"latency limits must be positive finite ms, got {list(constraints_ms)}; "
                          "pass e.g. --constraints-ms 5,10,15")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ConfigError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not np.isfinite(penalty):
        raise ConfigError(f"the unmet-limit penalty must be finite, got {penalty!r}")
    return limits


def block_latencies(specs: list[BlockSpec], latency: LatencyLike,
                    keys: list[str] | None = None) -> np.ndarray:
    """Latency in ms of each spec from any :data:`LatencyLike` source; a mapping miss names the key.

    ``keys`` (the specs' canonical keys, when the caller has them) saves rebuilding them for a mapping.
    """
    if isinstance(latency, Mapping):
        keys = keys if keys is not None else [s.key() for s in specs]
        try:
            out = np.array([latency[k] for k in keys], np.float64)
        except KeyError:
            missing = [k for k in keys if k not in latency]
            raise ConfigError(f"latency table has no entry for block {missing[0]!r} ({len(missing)} "
                              "missing); build it over space.distinct_blocks() or pass a LatencyPredictor"
                              ) from None
    else:
        fn = getattr(latency, "predict_in_chain", None) or getattr(latency, "predict", None) or latency
        out = np.asarray(fn(specs), np.float64).reshape(-1)
    if out.shape != (len(specs),) or not np.all(np.isfinite(out)):
        raise ConfigError(f"latency source returned {out.shape} values for {len(specs)} blocks or a "
                          "non-finite one; it must give one finite ms per block")
    return out


def subnet_latencies(space: CandidateSpace, batch: SubnetBatch, latency: LatencyLike) -> np.ndarray:
    """Sum of block latencies of each subnet; each distinct block is priced once (§4.3 look-ups)."""
    ms = block_latencies(space.distinct_blocks(), latency, space.distinct_keys())
    body, ends = space.block_index(batch)
    priced = np.where(body >= 0, ms[np.maximum(body, 0)], 0.0)
    return priced.sum(axis=(1, 2)) + ms[ends].sum(axis=1)


def subnet_losses(space: CandidateSpace, batch: SubnetBatch, lut: LutLike) -> np.ndarray:
    """Sum over stages of the table's INT8 NSR loss; one table query per distinct stage setting (§4.5)."""
    total = np.zeros(len(batch))
    for i, stage in enumerate(space.stages):
        first, inverse = unique_rows(space.stage_codes(batch, i))
        uniq = space.stage_settings(batch, i)[first]
        losses = _stage_losses(lut, i, stage.type, uniq)
        if losses.shape != (len(uniq),) or not np.all(np.isfinite(losses)):
            raise ConfigError(f"accuracy table returned {losses.shape} values for {len(uniq)} settings of "
                              f"stage {i} or a non-finite one; it must give one finite loss per setting")
        total += losses[inverse]
    return total


def _stage_losses(lut: LutLike, stage: int, block_type: str, rows: np.ndarray) -> np.ndarray:
    if isinstance(lut, Mapping):
        keys = [(stage, block_type, setting_key(r)) for r in rows]
        missing = [k for k in keys if k not in lut]
        if missing:
            raise ConfigError(f"accuracy table has no entry {missing[0]!r} ({len(missing)} missing); "
                              "build the table over the space's stage settings")
        return np.array([lut[k] for k in keys], np.float64)
    fn = lut.stage_losses if hasattr(lut, "stage_losses") else lut
    return np.asarray(fn(stage, block_type, rows), np.float64).reshape(-1)
