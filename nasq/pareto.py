"""Pareto front of (accuracy, size) over all evaluated models (JASQ §4: accuracy vs model size).

A point is on the front when no other point has accuracy >= and size <= with one strictly better.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of ``(accuracy to maximise, size to minimise)``.

    Duplicated points are all kept; points with a NaN coordinate are never on the front. Indices
    come back sorted by size, ascending.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ok = np.flatnonzero(np.isfinite(pts).all(axis=1))
    # Sort by size ascending, then accuracy descending; a point is on the front when its accuracy
    # beats every accuracy seen at a strictly smaller size or an equal size with higher accuracy.
    order = ok[np.lexsort((-pts[ok, 0], pts[ok, 1]))]
    front: list[int] = []
    best = -np.inf
    best_pt: tuple[float, float] | None = None
    for i in order:
        acc, size = pts[i]
        if acc > best:
            front.append(int(i))
            best, best_pt = acc, (acc, size)
        elif best_pt is not None and acc == best_pt[0] and size == best_pt[1]:
            front.append(int(i))
    return front


def write_front_csv(
    rows: Sequence[dict], path: str | Path, acc_key: str = "val_acc", size_key: str = "size_mb"
) -> list[dict]:
    """Write the Pareto-front rows of ``rows`` (dicts with accuracy and size keys) to CSV; return them."""
    front = [rows[i] for i in pareto_front([(r[acc_key], r[size_key]) for r in rows])]
    keys: list[str] = []
    for r in front:
        keys += [k for k in r if k not in keys]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys or [acc_key, size_key])
        w.writeheader()
        w.writerows(front)
    return front


def plot_front(
    rows: Sequence[dict],
    path: str | Path,
    acc_key: str = "val_acc",
    size_key: str = "size_mb",
    title: str = "accuracy vs size",
) -> Path:
    """Scatter every point and draw the Pareto front to a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(float(r[acc_key]), float(r[size_key])) for r in rows]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.scatter([p[1] for p in pts], [p[0] for p in pts], s=12, c="0.6", label="evaluated")
    ax.plot([pts[i][1] for i in front], [pts[i][0] for i in front], "o-", c="C3", ms=4, label="Pareto front")
    ax.set_xlabel(size_key)
    ax.set_ylabel(acc_key)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
