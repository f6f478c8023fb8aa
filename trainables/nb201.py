"""NAS-Bench-201 trainable: a "training run" that looks the genome up in the published table.

Registers the ``nb201`` experiment (metric ``val_acc``, mode ``max``). The experiment config is
:class:`nasq.settings.NB201Settings` in dict form (read back with ``from_config``); its fields:

- ``table``: path of the NB201 accuracy CSV; ``dataset``: cifar10 | cifar100 | imagenet16.
- ``latency_table``, ``latency_column``: a device latency column (HELP benchmark), reported as
  ``latency_ms``; with ``max_latency_ms`` it becomes a constraint, by ``constraint_mode``:
  ``hard`` (default) in the evolution core, so a slower cell is never proposed; ``penalty``, the
  fitness scaled by ``(latency / limit) ** penalty_gamma`` over the limit (JASQ Eq. 1's shape);
  ``after``, a slower cell is evaluated but gets no fitness, so the searcher counts it as a
  failed individual that never becomes a parent. Results keep ``latency_ms`` and ``feasible``.
  A limit below the fastest cell raises ``ConstraintError``.
- ``sim_time``: simulate training time; a trial sleeps ``sim_time * (0.2 + 0.8 c)`` seconds, where
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
from nasq.evolution.constraint import Constraint
from nasq.experiments import Experiment, register
from nasq.nb201_table import NB201Table, load_table
from nasq.settings import NB201Settings
from nasq.spaces.nb201 import NB201Space

METRIC = "val_acc"
_OP_COST = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}
_MAX_COST = 1 + 9 * 6


def table_of(cfg: dict) -> NB201Table:
    """The (process-cached) table named by an experiment config."""
    s = settings_of(cfg)
    if not s.table:
        raise ConfigError("the nb201 experiment needs a table: pass --table PATH to the NB201 CSV")
    return load_table(s.table, s.dataset, s.latency_table, s.latency_column)


def settings_of(cfg: dict | NB201Settings) -> NB201Settings:
    """The typed settings of an experiment (or trial) config."""
    return cfg if isinstance(cfg, NB201Settings) else NB201Settings.from_config(cfg)


def relative_cost(genome: str) -> float:
    """Relative convolution cost of a cell in (0, 1], proportional to its multiply-adds."""
    ops = NB201Space().decode(genome).ops
    return (1 + sum(_OP_COST.get(op, 0) for op in ops)) / _MAX_COST


def nb201_trainable(config: dict) -> None:
    """Tune function trainable: report the table's accuracy (and latency) of ``config["genome"]``."""
    s = settings_of(config)
    entry = table_of(s).query(config["genome"])
    sim = s.sim_time
    if sim > 0:
        time.sleep(sim * (0.2 + 0.8 * relative_cost(entry.genome)))
    result = {METRIC: entry.test_acc, "test_acc": entry.test_acc,
              "node_id": ray.get_runtime_context().get_node_id()}  # which cluster node ran it
    if entry.latency_ms is not None:
        result["latency_ms"] = entry.latency_ms
        limit = s.max_latency_ms
        if limit is not None:
            result["feasible"] = bool(entry.latency_ms <= limit)
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


def _latency_limit(cfg: dict) -> float | None:
    """Validate the latency limit of ``cfg`` on the driver; None when there is none."""
    table = table_of(cfg)
    limit = settings_of(cfg).max_latency_ms
    if limit is None:
        return None
    if table.latency is None:
        raise ConfigError("--max-latency-ms needs --latency-table and --latency-column")
    fastest = min(table.latency.values())
    if float(limit) < fastest:
        raise ConstraintError(f"no NB201 cell meets {limit} ms on {table.latency_column} (fastest: "
                              f"{fastest:.3f} ms); raise --max-latency-ms")
    return float(limit)


def make_fitness(cfg: dict) -> LatencyLimit | None:
    """The after-evaluation latency fitness (``constraint_mode: after``, today's failed-individual
    path), else None: the other modes enforce the limit in the evolution core."""
    limit = _latency_limit(cfg)
    if limit is None or settings_of(cfg).constraint_mode != "after":
        return None
    return LatencyLimit(limit)


@dataclass(frozen=True)
class LatencyCost:
    """Genome -> latency in ms from the HELP latency table (a cheap, pre-evaluation cost).

    Holds only paths, so it pickles small; the table is loaded once per process.
    """

    table: str
    dataset: str
    latency_table: str
    latency_column: str

    def __call__(self, genome: str) -> float:
        t = load_table(self.table, self.dataset, self.latency_table, self.latency_column)
        latency = t.latency.get(genome) if t.latency is not None else None
        return latency if latency is not None else t.query(genome).latency_ms


def make_constraint(cfg: dict) -> Constraint | None:
    """The latency limit as a core constraint (issue 7 §3): ``constraint_mode`` ``hard`` (default:
    over-limit cells are never proposed) or ``penalty`` (JASQ Eq. 1 with ``penalty_gamma``);
    None without a limit or in ``after`` mode."""
    limit = _latency_limit(cfg)
    s = settings_of(cfg)
    if limit is None or s.constraint_mode == "after":
        return None
    cost = LatencyCost(str(s.table), s.dataset, str(s.latency_table), str(s.latency_column))
    return Constraint(cost, limit, mode=s.constraint_mode, gamma=s.penalty_gamma, name="latency_ms",
                      draws=s.constraint_draws if s.constraint_mode == "hard" else 1)


def _space(cfg: dict) -> NB201Space:
    return NB201Space()


def _trainable(cfg: dict):
    from nasq.searchers.status import with_trial_repr

    return with_trial_repr(nb201_trainable, METRIC)  # the dashboard names trial, genome, score


def _resources(cfg: dict) -> dict:
    return {"cpu": settings_of(cfg).cpus_per_trial}


EXPERIMENT = register(Experiment(name="nb201", make_space=_space, make_trainable=_trainable, metric=METRIC,
                                 mode="max", make_fitness=make_fitness, make_constraint=make_constraint,
                                 resources=_resources, settings_class=NB201Settings))
