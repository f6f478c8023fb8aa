"""The one Pareto writer of size-aware searches (JASQ and quant-policy, JASQ §4).

From the run's trials (the frame of :func:`nasq.report.load_trials`, or ``trials.csv``) it writes
the front of (validation accuracy, Huffman-coded size) as ``pareto.csv`` and ``pareto.png`` and the
best genomes by fitness as ``best_genomes.json`` into the run directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from nasq.pareto import plot_front, write_front_csv
from nasq.report import TRIALS_CSV

PARETO_CSV = "pareto.csv"
PARETO_PNG = "pareto.png"
BEST_JSON = "best_genomes.json"
COLUMNS = ("genome", "val_acc", "size_mb", "size_mb_fixed", "size_mb_float", "fitness", "train_seconds",
           "trial_id")


def finished_rows(run_dir: str | Path, frame: pd.DataFrame | None = None) -> list[dict]:
    """Trials of the run that reported accuracy and size, as dicts of :data:`COLUMNS`."""
    if frame is None:
        path = Path(run_dir) / TRIALS_CSV
        if not path.is_file():
            return []
        frame = pd.read_csv(path)
    if frame.empty or "val_acc" not in frame or "size_mb" not in frame:
        return []
    frame = frame.dropna(subset=["val_acc", "size_mb"])
    cols = [c for c in COLUMNS if c in frame]
    return [{c: _plain(r[c]) for c in cols} for _, r in frame.iterrows()]


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def write_front_outputs(run_dir: str | Path, frame: pd.DataFrame | None = None, top: int = 5,
                        title: str = "validation accuracy vs Huffman size") -> tuple[list[dict], list[dict]]:
    """Write the Pareto front (CSV, PNG) and the ``top`` genomes by fitness; return (front, best)."""
    run_dir = Path(run_dir)
    rows = finished_rows(run_dir, frame)
    front = write_front_csv(rows, run_dir / PARETO_CSV, acc_key="val_acc", size_key="size_mb")
    if rows:
        plot_front(rows, run_dir / PARETO_PNG, acc_key="val_acc", size_key="size_mb",
                   title=f"{title} ({len(rows)} trials)")
    scored = [r for r in rows if r.get("fitness") is not None]
    best = sorted(scored, key=lambda r: -r["fitness"])[:top]
    tmp = run_dir / f".{BEST_JSON}.tmp"
    tmp.write_text(json.dumps({"best": best, "pareto": front}, indent=2))
    tmp.replace(run_dir / BEST_JSON)
    return front, best

