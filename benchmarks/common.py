"""Shared helpers of the benchmark scripts: the NB201 table, statistics, machine notes, result tables.

Every benchmark prints a Markdown table and writes it to ``benchmarks/results/<name>.md`` plus the raw
rows to ``benchmarks/results/<name>.csv``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CIFAR_TRAIN = REPO.parent / "shared" / "data" / "cifar10" / "cifar10_train_20000.npz"  # ../shared/data README
CIFAR_TEST = REPO.parent / "shared" / "data" / "cifar10" / "cifar10_test_2000.npz"


def require_cifar_subset() -> None:
    """Stop with one line when the shared CIFAR-10 subset (train 20k, test 2k) is not there."""
    for path in (CIFAR_TRAIN, CIFAR_TEST):
        if not path.is_file():
            raise SystemExit(f"{path} is missing; the benchmark reads ../shared/data/cifar10 (data README)")
NB201_TABLE = REPO.parent / "shared" / "data" / "nb201" / "nb201_nats_tss_test_acc_200ep.csv"
NB201_CIFAR10_COLUMN = "CIFAR10TestAccuracy200Epochs"
NB201_CIFAR10_OPTIMUM = 94.37  # known optimum of the column (data README), checked by load_nb201


def load_nb201(path: str | Path = NB201_TABLE, column: str = NB201_CIFAR10_COLUMN) -> dict[str, float]:
    """Map each NB201 architecture string to its accuracy column (NAS-Bench-201, Dong & Yang 2020)."""
    with open(path, newline="") as f:
        table = {row["ArchitectureString"]: float(row[column]) for row in csv.DictReader(f)}
    if len(table) != 5 ** 6:
        raise ValueError(f"{path}: expected 15625 architectures, got {len(table)}")
    if column == NB201_CIFAR10_COLUMN and round(max(table.values()), 2) != NB201_CIFAR10_OPTIMUM:
        raise ValueError(f"{path}: CIFAR-10 optimum {max(table.values()):.2f} is not {NB201_CIFAR10_OPTIMUM}")
    return table


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, as numpy)."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return percentile(values, 50)


class Stopwatch:
    """Accumulates durations of timed sections in nanoseconds (``time.perf_counter_ns``)."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc) -> None:
        self.samples.append(time.perf_counter_ns() - self._t0)


def cpu_model() -> str:
    """This CPU's model name and its INT8-relevant ISA flags (:func:`nasq.latency.fingerprint.cpu_info`)."""
    from nasq.latency.fingerprint import cpu_info

    info = cpu_info()
    flags = ",".join(info["cpu_flags"]) or "no AVX2/AVX-512 flags"
    return f"{info['cpu_model']} ({flags})"


def machine_note() -> str:
    """One line describing the machine (CPU model) and whether it was quiet (1-minute load vs cores)."""
    cores = os.cpu_count() or 1
    load1 = os.getloadavg()[0]
    quiet = ("quiet" if load1 < 0.5
             else f"NOT quiet: 1-min load {load1:.2f} on {cores} cores, shared with other jobs")
    now = _dt.datetime.now(_dt.timezone.utc)
    return (f"{now:%Y-%m-%d %H:%M} UTC, CPU {cpu_model()}, {cores} cores, "
            f"Python {platform.python_version()}; machine {quiet}")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; floats get 2 decimals unless already strings."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, notes: Sequence[str], headers: Sequence[str],
                  rows: Sequence[Sequence[object]],
                  raw: tuple[Sequence[str], Iterable[Sequence[object]]] | None = None) -> str:
    """Print and write ``results/<name>.md`` (title, notes, table) and ``results/<name>.csv``.

    ``raw`` (headers, rows), when given, is written to the CSV instead of the summary rows.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = format_table(headers, rows)
    text = "\n".join([f"# {title}", "", *[f"- {n}" for n in notes], "", table, ""])
    (RESULTS / f"{name}.md").write_text(text)
    csv_headers, csv_rows = raw if raw is not None else (headers, rows)
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_headers)
        writer.writerows(csv_rows)
    print(text)
    return text
