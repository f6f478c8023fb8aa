"""Build the latency predictor from real measurements and check it on unseen whole models (SpaceEvo Sec. 4).

:func:`build_predictor` samples blocks from a block space, measures them (in parallel, pinned actors;
items whose timings spread widely because another process took the CPU are measured again), measures a
few whole chains to calibrate the per-boundary overhead, fits and saves the predictor with its
data sets. :func:`evaluate_predictor` measures fresh random models (stem, 4–10 blocks, head) end to end and
compares them with the predictor: share within ±5 % and ±10 %, RMSPE (nn-Meter's metrics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nasq.blocks.spec import BlockSpec
from nasq.errors import ConfigError, DataError, bad_token
from nasq.latency.dataset import (MeasureSettings, get_space, measure_robust, sample_blocks, sample_chains,
                                  write_dataset)
from nasq.latency.predictor import LatencyPredictor

log = logging.getLogger(__name__)


def accuracy_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """nn-Meter accuracy metrics: share within ±5 % / ±10 %, RMSPE and median |error| (fractions)."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    err = p / m - 1.0
    return {"n": int(len(m)), "within_5": float(np.mean(np.abs(err) <= 0.05)),
            "within_10": float(np.mean(np.abs(err) <= 0.10)), "rmspe": float(np.sqrt(np.mean(err ** 2))),
            "median_abs_err": float(np.median(np.abs(err))), "bias": float(np.median(err))}


#: Which timing statistic trains and scores the predictor: the median (default) or the 25th percentile,
#: which is steadier when other processes share the CPU (interference only ever adds time).
STATISTICS: dict[str, str] = {"median": "median_ms", "p25": "p25_ms"}


def _stat_column(stat: str) -> str:
    if stat not in STATISTICS:
        raise ConfigError(bad_token("timing statistic", stat, sorted(STATISTICS)))
    return STATISTICS[stat]


def _common_fingerprint(rows: list[dict]) -> dict:
    ids = {r["fingerprint"].get("fingerprint_id") for r in rows}
    if len(ids) != 1:
        raise DataError(f"measurements come from {len(ids)} different device fingerprints; measure on one "
                        "machine (or one engine configuration) per data set")
    return rows[0]["fingerprint"]


#: Smallest allowed value of each count of :func:`build_predictor` / :func:`evaluate_predictor`.
_MINIMUM = {"samples": 2, "calib_chains": 0, "models": 1, "actors": 0, "seed": 0}


def check_counts(**counts: int) -> None:
    """Refuse counts below their minimum (``--samples`` >= 2, ``--models`` >= 1, ...) in one line."""
    for name, value in counts.items():
        low = _MINIMUM[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")


@dataclass
class BuildReport:
    """What :func:`build_predictor` measured and fitted."""

    predictor: LatencyPredictor
    path: Path | None
    blocks: int
    chains: int
    measure_s: float               # wall time of all measurements
    files: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)        # measured blocks (keys, median/p25/p75 ms)
    chain_rows: list[dict] = field(default_factory=list)  # measured calibration chains


def build_predictor(engine: str = "ort-int8", *, space: str = "spaceevo-blocks", samples: int = 250,
                    calib_chains: int = 24, actors: int = 2, settings: MeasureSettings | None = None,
                    seed: int = 0, out: str | Path | None = None, stat: str = "median") -> BuildReport:
    """Measure sampled blocks and calibration chains, fit the predictor and save it (Sec. 4 training).

    Args:
        engine: engine to measure on.
        space: registered block space to sample from.
        samples: body blocks to measure (every stem and head of the space is measured too).
        calib_chains: whole chains measured to fit the per-boundary overhead (0 = none).
        actors: measuring actors (0 = in this process, without Ray).
        settings: timing settings; its engine is replaced by ``engine``.
        seed: sampling seed (evaluation uses other seeds).
        out: predictor path; the block and chain data sets are written next to it as CSV.
        stat: timing statistic to fit, ``median`` or ``p25`` (see :data:`STATISTICS`).
    """
    col = _stat_column(stat)
    check_counts(samples=samples, calib_chains=calib_chains, actors=actors, seed=seed)
    settings = MeasureSettings(**{**vars(settings or MeasureSettings()), "engine": engine})
    blocks = sample_blocks(space, samples, seed=seed)
    chains = sample_chains(space, calib_chains, seed=seed + 10_000)
    t0 = time.perf_counter()
    rows = measure_robust([[b] for b in blocks], settings, actors=actors)
    chain_rows = measure_robust(chains, settings, actors=actors) if chains else []
    measure_s = time.perf_counter() - t0
    fingerprint = _common_fingerprint(rows + chain_rows)
    meta = {"space": space, "samples": samples, "seed": seed, "repeats": settings.repeats,
            "actors": actors, "calib_chains": calib_chains, "stat": stat}
    pred = LatencyPredictor.fit(blocks, [r[col] for r in rows], engine=engine,
                                fingerprint=fingerprint, seed=seed, meta=meta)
    if chains:
        pred.calibrate(chains, [r[col] for r in chain_rows])
    files: list[Path] = []
    path = Path(out) if out else None
    if path:
        pred.save(path)
        stem = path.with_suffix("")
        files = [path, write_dataset(f"{stem}.blocks.csv", rows, fingerprint, meta)]
        if chain_rows:
            files.append(write_dataset(f"{stem}.chains.csv", chain_rows, fingerprint, meta))
    return BuildReport(pred, path, len(blocks), len(chains), measure_s, files, rows, chain_rows)


@dataclass
class EvalResult:
    """Measured vs predicted latency of whole models."""

    keys: list[str]
    measured_ms: np.ndarray
    predicted_ms: np.ndarray
    table_hits: float               # share of the models' blocks answered by the table
    metrics: dict[str, float]
    rows: list[dict] = field(default_factory=list)  # the models' measurements (median/p25/p75 ms)


def evaluate_predictor(pred: LatencyPredictor, *, space: str = "spaceevo-blocks", models: int = 40,
                       actors: int = 2, settings: MeasureSettings | None = None, seed: int = 12345,
                       min_blocks: int = 4, max_blocks: int = 10, stat: str | None = None) -> EvalResult:
    """Measure ``models`` unseen random chains end to end and compare with ``pred`` (Sec. 4 accuracy check).

    ``stat`` is the timing statistic compared (default: the one the predictor was fitted on).
    """
    col = _stat_column(stat or pred.meta.get("stat", "median"))
    check_counts(models=models, actors=actors, seed=seed)
    settings = MeasureSettings(**{**vars(settings or MeasureSettings()), "engine": pred.engine})
    chains = sample_chains(get_space(space), models, seed=seed, min_blocks=min_blocks, max_blocks=max_blocks)
    rows = measure_robust(chains, settings, actors=actors)
    measured = np.array([r[col] for r in rows])
    predicted = np.array([pred.predict_model(c) for c in chains])
    hits = float(np.mean([s.key() in pred.table for c in chains for s in c]))
    return EvalResult([r["key"] for r in rows], measured, predicted, hits,
                      accuracy_metrics(predicted, measured), rows)


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table of named metric dicts (one row per predictor)."""
    lines = ["| predictor | n | within ±5% | within ±10% | RMSPE | median abs err |",
             "|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['n']} | {m['within_5']:.1%} | {m['within_10']:.1%} | {m['rmspe']:.1%} "
                     f"| {m['median_abs_err']:.1%} |")
    return "\n".join(lines)


def plot_predicted_vs_measured(series: dict[str, tuple[Sequence[float], Sequence[float]]],
                               path: str | Path, title: str = "") -> Path:
    """Scatter of predicted vs measured latency (log axes, ±10 % band) for named (measured, predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = np.inf, 0.0
    for name, (meas, pred) in series.items():
        meas, pred = np.asarray(meas), np.asarray(pred)
        ax.scatter(meas, pred, s=14, alpha=0.75, label=name)
        lo, hi = min(lo, meas.min(), pred.min()), max(hi, meas.max(), pred.max())
    xs = np.array([lo * 0.9, hi * 1.1])
    ax.plot(xs, xs, "k-", lw=1)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.2, label="±10%")
    ax.set(xscale="log", yscale="log", xlabel="measured latency (ms)", ylabel="predicted latency (ms)",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_chains(keys: Sequence[str]) -> list[list[BlockSpec]]:
    """Chains from chain keys (block keys joined by ``+``)."""
    return [[BlockSpec.from_key(k) for k in key.split("+")] for key in keys]
