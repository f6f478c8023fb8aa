"""NB201 lookup table and trainable helpers (no Ray)."""

from __future__ import annotations

import math

import pytest

from nasq.errors import ConfigError, ConstraintError, DataError, GenomeError
from nasq.nb201_table import NB201Table, load_table
from nasq.spaces.nb201 import NB201_OPS
from nasq.trainables.nb201 import LatencyLimit, make_fitness, relative_cost

OPTIMA = {"cifar10": 94.37, "cifar100": 73.51, "imagenet16": 47.31}


@pytest.mark.parametrize("dataset", sorted(OPTIMA))
def test_known_optima(nb201_table, dataset):
    table = load_table(str(nb201_table), dataset)
    assert len(table) == 5 ** 6
    assert table.best().test_acc == pytest.approx(OPTIMA[dataset], abs=0.005)


def test_query_by_any_spelling_and_bad_genome(nb201_table):
    table = load_table(str(nb201_table))
    best = table.best()
    assert table.query("  " + best.genome + " ").test_acc == best.test_acc
    with pytest.raises(GenomeError, match="conv_9x9"):
        table.query(best.genome.replace("nor_conv_3x3", "conv_9x9", 1))


def test_latency_column_and_missing_inputs(nb201_table, tmp_path):
    latency = nb201_table.parent / "nb201_latency_help_24dev.csv"
    table = NB201Table(nb201_table, latency_path=latency, latency_column="lat_ms_raspi4")
    entry = table.query(table.best().genome)
    assert entry.latency_ms is not None and entry.latency_ms > 0
    with pytest.raises(DataError, match="lat_ms_raspi5"):
        NB201Table(nb201_table, latency_path=latency, latency_column="lat_ms_raspi5")
    with pytest.raises(DataError, match="both"):
        NB201Table(nb201_table, latency_path=latency)
    with pytest.raises(DataError, match="not found"):
        NB201Table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="imagenet16"):
        NB201Table(nb201_table, dataset="svhn")


def test_latency_limit_fitness(nb201_table):
    latency = str(nb201_table.parent / "nb201_latency_help_24dev.csv")
    cfg = {"table": str(nb201_table), "latency_table": latency, "latency_column": "lat_ms_raspi4"}
    assert make_fitness(cfg) is None  # no limit: the metric itself
    fit = make_fitness({**cfg, "max_latency_ms": 20.0, "constraint_mode": "after"})  # hard: in the core
    assert fit({"val_acc": 90.0, "latency_ms": 19.9}) == 90.0
    assert fit({"val_acc": 90.0, "latency_ms": 20.1}) is None
    assert fit({"val_acc": 90.0}) is None and fit({"val_acc": 90.0, "latency_ms": math.nan}) is None
    with pytest.raises(ConstraintError, match="fastest"):
        make_fitness({**cfg, "max_latency_ms": 0.01})
    with pytest.raises(ConfigError, match="--latency-table"):
        make_fitness({"table": str(nb201_table), "max_latency_ms": 20.0})
    assert LatencyLimit(5.0) == LatencyLimit(5.0)  # plain dataclass: pickles into tuner.pkl


def test_relative_cost_orders_cells():
    cheapest = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    dearest = "+".join("|" + "|".join(f"nor_conv_3x3~{j}" for j in range(i)) + "|" for i in (1, 2, 3))
    middle = dearest.replace("nor_conv_3x3", "nor_conv_1x1")
    assert 0 < relative_cost(cheapest) < relative_cost(middle) < relative_cost(dearest) == 1.0
    assert len(NB201_OPS) == 5
