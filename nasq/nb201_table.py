"""NAS-Bench-201 lookup tables: accuracy (and device latency) of every cell architecture.

NAS-Bench-201 (Dong & Yang, ICLR 2020; NATS-Bench topology space) publishes the trained
accuracy of all 15,625 cells, so a "trial" looks a genome up instead of training it. The
accuracy table is a CSV with the NB201 architecture string (``ArchitectureString``) and
one 200-epoch test-accuracy column per data set; the optional latency table (HELP
benchmark, Lee et al. 2021) has ``arch_str`` and one ``lat_ms_<device>`` column per device.

The shared table holds test accuracies only, so the searchers' ``val_acc`` is that same
200-epoch test accuracy (as in the tabular NB201 comparisons the searchers are checked against).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nasq.errors import DataError, GenomeError
from nasq.spaces.nb201 import NB201Space

ARCH_COLUMN = "ArchitectureString"
LATENCY_ARCH_COLUMN = "arch_str"
DATASET_COLUMNS: dict[str, str] = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}
TABLE_NAME = "nb201_nats_tss_test_acc_200ep.csv"
NB201_CELLS = 5 ** 6  # every cell of the space: 5 operations on 6 edges


@dataclass(frozen=True)
class NB201Entry:
    """One looked-up architecture: accuracy in percent and, if asked, latency in ms."""

    genome: str
    test_acc: float
    latency_ms: float | None = None


class NB201Table:
    """Accuracy (and optional latency) of NB201 cells, keyed by canonical genome string."""

    def __init__(self, path: str | Path, dataset: str = "cifar10", latency_path: str | Path | None = None,
                 latency_column: str | None = None) -> None:
        if dataset not in DATASET_COLUMNS:
            raise DataError(f"unknown NB201 data set {dataset!r}; allowed: {sorted(DATASET_COLUMNS)}")
        self.space = NB201Space()
        self.dataset = dataset
        self.accuracy = _read_column(path, ARCH_COLUMN, DATASET_COLUMNS[dataset], "--table")
        self.latency: dict[str, float] | None = None
        self.latency_column = latency_column
        if latency_path is not None or latency_column is not None:
            if latency_path is None or latency_column is None:
                raise DataError("a latency constraint needs both --latency-table and --latency-column")
            self.latency = _read_column(latency_path, LATENCY_ARCH_COLUMN, latency_column, "--latency-table")

    def __len__(self) -> int:
        return len(self.accuracy)

    def query(self, genome: str) -> NB201Entry:
        """Look up ``genome`` (any valid NB201 string); raise ``GenomeError``/``DataError`` if impossible."""
        key = self.space.canonical(genome)
        return self._query(key)

    def _query(self, key: str) -> NB201Entry:
        if key not in self.accuracy:
            raise DataError(f"architecture {key!r} is not in the NB201 table; "
                            "use the complete 15,625-row table")
        latency = None
        if self.latency is not None:
            if key not in self.latency:
                raise DataError(f"architecture {key!r} is not in the latency table; use the complete table")
            latency = self.latency[key]
        return NB201Entry(key, self.accuracy[key], latency)

    def best(self) -> NB201Entry:
        """The most accurate architecture of the table (the known optimum)."""
        key = max(self.accuracy, key=self.accuracy.__getitem__)
        return self._query(key)


def _read_column(path: str | Path, key_column: str, value_column: str, flag: str) -> dict[str, float]:
    """Read ``key_column -> value_column`` of a CSV, with one-line errors naming the fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"NB201 table {path} not found; pass an existing CSV with {flag}")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}); pass the NB201 CSV with {flag}") from exc
    for column in (key_column, value_column):
        if column not in header:
            shown = [c for c in header if c != key_column][:30]
            raise DataError(f"{path} has no column {column!r}; use one of: {shown}")
    frame = pd.read_csv(path, usecols=[key_column, value_column])
    space = NB201Space()
    out: dict[str, float] = {}
    for arch, value in zip(frame[key_column], frame[value_column]):
        try:
            out[space.canonical(str(arch))] = float(value)
        except GenomeError as exc:
            raise DataError(f"{path}: bad architecture string ({exc}); is this an NB201 table?") from exc
    if not out:
        raise DataError(f"{path} has no rows; pass the NB201 CSV with {flag}")
    if len(out) != NB201_CELLS:
        raise DataError(f"{path} has {len(out)} distinct cells, not all {NB201_CELLS} of NAS-Bench-201; "
                        f"pass the complete table with {flag}")
    return out


@functools.lru_cache(maxsize=8)
def load_table(path: str, dataset: str = "cifar10", latency_path: str | None = None,
               latency_column: str | None = None) -> NB201Table:
    """Load (once per process) an :class:`NB201Table`; the cache keeps Tune workers fast."""
    return NB201Table(path, dataset, latency_path, latency_column)


def default_table_path(name: str = TABLE_NAME) -> Path | None:
    """``../shared/data/nb201/<name>`` next to the repository, when it exists."""
    root = Path(__file__).resolve().parents[1]
    path = root.parent / "shared" / "data" / "nb201" / name
    return path if path.is_file() else None


__all__ = ["DATASET_COLUMNS", "NB201Entry", "NB201Table", "default_table_path", "load_table"]
