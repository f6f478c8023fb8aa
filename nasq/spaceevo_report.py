"""Report of a SpaceEvo space search (SpaceEvo §4.4, §5): Q-T curve, best spaces, final population.

From the run's trials (the frame of :func:`nasq.report.load_trials`) and the newest searcher state in the
run directory it writes:

- ``spaceevo_qt_curve.csv`` / ``.png``: every finished trial's Q-T score in completion order and the
  running best;
- ``spaceevo_best.csv`` (the best spaces with their per-limit parts) and ``spaceevo_best.json`` (the best
  space stage by stage: block type and width window);
- ``spaceevo_population.csv`` / ``.png``: per stage, how many spaces of the final (aging) population use
  each block type (the paper's finding for Intel CPUs: FusedMB/MBv2 early, few SE/hardswish stages).

Pure: pandas and matplotlib, no Ray.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from nasq.spaces.spaceevo import SpaceEvoSpace

logger = logging.getLogger(__name__)

CURVE_CSV, CURVE_PNG = "spaceevo_qt_curve.csv", "spaceevo_qt_curve.png"
BEST_CSV, BEST_JSON = "spaceevo_best.csv", "spaceevo_best.json"
HIST_CSV, HIST_PNG = "spaceevo_population.csv", "spaceevo_population.png"
METRIC = "qt_score"
TOP = 10


def final_population(run_dir: str | Path) -> list[str]:
    """Genomes of the searcher's living (§4.4 aging) population in its newest state (empty when none)."""
    files = sorted(Path(run_dir).glob("nasq-searcher-state-*.json"))
    if not files:
        return []
    try:
        state = json.loads(files[-1].read_text())
        return [str(m["genome"]) for m in state["strategy"]["population"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("cannot read the population from %s (%s); no histogram written", files[-1], exc)
        return []


def population_histogram(genomes: Sequence[str], space: SpaceEvoSpace) -> pd.DataFrame:
    """Counts of (stage, block type) over ``genomes`` (SpaceEvo §5 block-type finding), zeros included."""
    h = space.hyperspace
    counts = {(i, t): 0 for i in range(h.num_stages) for t in h.types}
    for g in genomes:
        for i, t in enumerate(space.decode(g).types):
            counts[(i, t)] += 1
    return pd.DataFrame([{"stage": i, "block_type": t, "count": n} for (i, t), n in counts.items()])


def write_spaceevo_report(run_dir: str | Path, trials: pd.DataFrame, space: SpaceEvoSpace,
                          limits_ms: Sequence[float]) -> dict[str, Path]:
    """Write the files of the module docstring (SpaceEvo §4.4, §5) into ``run_dir``; return them by kind."""
    run_dir = Path(run_dir)
    done = trials.dropna(subset=["order", METRIC]) if METRIC in trials else trials.iloc[0:0]
    done = done.sort_values("order")
    curve = pd.DataFrame({"order": done["order"].astype(int), "trial_id": done["trial_id"],
                          "genome": done["genome"], METRIC: done[METRIC],
                          "best_so_far": done[METRIC].cummax()})
    curve.to_csv(run_dir / CURVE_CSV, index=False)
    parts = [c for c in done.columns if c.startswith(("qt_part_", "feasible_subnets_"))]
    best = done.sort_values(METRIC, ascending=False, kind="stable").drop_duplicates("genome").head(TOP)
    best[["genome", METRIC, *parts]].to_csv(run_dir / BEST_CSV, index=False)
    out = {"curve": run_dir / CURVE_CSV, "best": run_dir / BEST_CSV}
    if not best.empty:
        top = best.iloc[0]
        g = space.decode(top["genome"])
        stages = [{"stage": i, "block_type": t, "window": s.split(":")[1]}
                  for i, (t, s) in enumerate(zip(g.types, top["genome"].split("|")))]
        doc = {"genome": top["genome"], METRIC: float(top[METRIC]), "limits_ms": list(limits_ms),
               "per_limit": [float(top[f"qt_part_{i}"]) for i in range(len(limits_ms))
                             if f"qt_part_{i}" in top],
               "stages": stages}
        (run_dir / BEST_JSON).write_text(json.dumps(doc, indent=2))
        out["best_json"] = run_dir / BEST_JSON
    hist = population_histogram(final_population(run_dir), space)
    hist.to_csv(run_dir / HIST_CSV, index=False)
    out["population"] = run_dir / HIST_CSV
    _plot(curve, hist, run_dir)
    return out


def _plot(curve: pd.DataFrame, hist: pd.DataFrame, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(curve["order"], curve[METRIC], s=8, alpha=0.5, label="trial")
    ax.plot(curve["order"], curve["best_so_far"], drawstyle="steps-post", color="C1", label="best so far")
    ax.set_xlabel("completed trials")
    ax.set_ylabel("Q-T score")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / CURVE_PNG, dpi=100)
    plt.close(fig)
    table = hist.pivot(index="stage", columns="block_type", values="count").fillna(0)
    fig, ax = plt.subplots(figsize=(7, 4))
    table.plot.bar(stacked=True, ax=ax, width=0.8, rot=0)
    ax.set_ylabel("spaces in the final population")
    ax.set_title("block type per stage")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    fig.tight_layout()
    fig.savefig(run_dir / HIST_PNG, dpi=100)
    plt.close(fig)
