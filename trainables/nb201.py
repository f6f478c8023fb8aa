"""NAS-Bench-201 trainable: a "training run" that looks the genome up in the published table.

Registers the ``nb201`` experiment (metric ``val_acc``, mode ``max``). Experiment config keys:

- ``table``: path of the NB201 accuracy CSV; ``dataset``: cifar10 | cifar100 | imagenet16.
- ``latency_table``, ``latency_column``: a device latency column (HELP benchmark), reported as
  ``latency_ms``; with ``max_latency_ms`` it becomes a hard constraint: a slower cell gets no
  fitness, so the searcher counts it as a failed individual that never becomes a parent
  (its accuracy is still recorded). A limit below the fastest cell raises ``ConstraintError``.
- ``sim_seconds``: simulate training time; a trial sleeps ``sim_seconds * (0.2 + 0.8 c)`` where
  ``c`` in (0, 1] is the cell's relative convolution cost (3x3 conv = 9, 1x1 conv = 1, per edge),
  so concurrency behaves as with real training of different sizes.
- ``cpus_per_trial``: CPUs reserved per trial (default 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import ray
from ray import tune

from nasq.errors import ConfigError, ConstraintError
from nasq.experiments import Experiment, register
from nasq.nb201_table import NB201Table, load_table
from nasq.spaces.nb201 import NB201Space

METRIC = "val_acc"
_OP_COST = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}
_MAX_COST = 1 + 9 * 6


def table_of(cfg: dict) -> NB201Table:
    """The (process-cached) table named by an experiment config."""
    if not cfg.get("table"):
        raise ConfigError("the nb201 experiment needs a table: pass --table PATH to the NB201 CSV")
    return load_table(str(cfg["table"]), str(cfg.get("dataset", "cifar10")), cfg.get("latency_table"),
                      cfg.get("latency_column"))


def relative_cost(genome: str) -> float:
    """Relative convolution cost of a cell in (0, 1], proportional to its multiply-adds."""
    ops = NB201Space().decode(genome).ops
    return (1 + sum(_OP_COST.get(op, 0) for op in ops)) / _MAX_COST


def nb201_trainable(config: dict) -> None:
    """Tune function trainable: report the table's accuracy (and latency) of ``config["genome"]``."""
    entry = table_of(config).query(config["genome"])
    sim = float(config.get("sim_seconds") or 0.0)
    if sim > 0:
        time.sleep(sim * (0.2 + 0.8 * relative_cost(entry.genome)))
    result = {METRIC: entry.test_acc, "test_acc": entry.test_acc,
              "node_id": ray.get_runtime_context().get_node_id()}  # which cluster node ran it
    if entry.latency_ms is not None:
        result["latency_ms"] = entry.latency_ms
        limit = config.get("max_latency_ms")
        if limit is not None:
            result["feasible"] = bool(entry.latency_ms <= float(limit))
    tune.report(result)


@dataclass(frozen=True)
class LatencyLimit:
    """Fitness under a hard latency limit: the metric if ``latency_ms <= limit``, else None.

    A None fitness makes the trial a failed individual (never selected as a parent).
    """

    limit_ms: float
    metric: str = METRIC

    def __call__(self, result: dict) -> float | None:
        latency = result.get("latency_ms")
        if latency is None or not math.isfinite(float(latency)) or float(latency) > self.limit_ms:
            return None
        return result.get(self.metric)


def make_fitness(cfg: dict) -> LatencyLimit | None:
    """Validate the tables of ``cfg`` on the driver and build the latency-limit fitness, if any."""
    table = table_of(cfg)
    limit = cfg.get("max_latency_ms")
    if limit is None:
        return None
    if table.latency is None:
        raise ConfigError("--max-latency-ms needs --latency-table and --latency-column")
    fastest = min(table.latency.values())
    if float(limit) < fastest:
        raise ConstraintError(f"no NB201 cell meets {limit} ms on {table.latency_column} (fastest: "
                              f"{fastest:.3f} ms); raise --max-latency-ms")
    return LatencyLimit(float(limit))


def _space(cfg: dict) -> NB201Space:
    return NB201Space()


def _trainable(cfg: dict):
    return nb201_trainable


def _resources(cfg: dict) -> dict:
    return {"cpu": float(cfg.get("cpus_per_trial", 1))}


EXPERIMENT = register(Experiment(name="nb201", make_space=_space, make_trainable=_trainable, metric=METRIC,
                                 mode="max", make_fitness=make_fitness, resources=_resources))
