"""Registry of searchable experiments: a space, a Tune trainable, a metric and their options.

An :class:`Experiment` tells the runner (:mod:`nasq.runner`) everything it needs to run one
kind of search on Ray Tune: how to build the genome space and the trainable from the
experiment's config dict, which metric to optimise and in which direction, an optional
fitness (JASQ Eq. 1, or a constraint penalty), the resources of one trial, driver-side Tune
callbacks and a hook run before ``fit`` (and before a resumed ``fit``).

The Tune config of every trial is ``{**experiment_config, "genome": "<encoded genome>"}``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nasq.errors import ConfigError, bad_token
from nasq.spaces import Space

if TYPE_CHECKING:
    from nasq.evolution.constraint import Constraint

Fitness = Callable[[dict], float]

_REGISTRY: dict[str, "Experiment"] = {}
# Experiments whose modules are imported on first use (the module registers the experiment).
_LAZY: dict[str, str] = {
    "nb201": "nasq.trainables.nb201",
    "jasq": "nasq.trainables.jasq",
    "quant-policy": "nasq.trainables.quant_policy",
    "spaceevo": "nasq.trainables.spaceevo",
    "subnet": "nasq.trainables.subnet",
}


def _no_fitness(cfg: dict) -> Fitness | None:
    return None


def _no_constraint(cfg: dict) -> "Constraint | None":
    return None


def _one_cpu(cfg: dict) -> dict:
    return {"cpu": 1}


def _no_callbacks(cfg: dict, run_dir: Path) -> list:
    return []


@dataclass(frozen=True)
class Experiment:
    """One searchable experiment (a space, a trainable and the objective).

    Attributes:
        name: registry name, e.g. ``"nb201"``, ``"jasq"``, ``"quant-policy"``.
        make_space: experiment_config -> genome space.
        make_trainable: experiment_config -> Tune trainable (class or function).
        metric: the result key the searcher optimises (e.g. ``"val_acc"``).
        mode: ``"max"`` or ``"min"``.
        make_fitness: experiment_config -> optional ``result -> float`` (None: the metric).
        make_constraint: experiment_config -> optional :class:`nasq.evolution.Constraint` on the
            genome, known before evaluation and enforced in the evolution core (issue 7 §3).
        resources: experiment_config -> resources of one trial (``tune.with_resources``).
        make_callbacks: (experiment_config, run_dir) -> driver-side Tune callbacks; they are
            pickled into the Tune experiment, so they must pickle.
        prepare: optional driver-side hook ``(settings, run_dir, resumed) -> settings | None``
            run once Ray is up, before ``fit`` (and before a resumed ``fit``), e.g. to create or
            restore named actors the trainables use or to prepare weights; it may return the
            settings with derived fields filled in (they are written to the run file).
        finish: optional driver-side hook ``(settings, run_dir, trials)`` run after ``fit``,
            after a resumed ``fit`` and by ``nasq report``, to write experiment-specific
            outputs (e.g. the Pareto front); ``trials`` is :func:`nasq.report.load_trials`' frame.
        settings_class: the typed settings of ``experiment_config`` (a
            :class:`nasq.settings.ExperimentSettings` subclass), or None for a plain dict.
    """

    name: str
    make_space: Callable[[dict], Space]
    make_trainable: Callable[[dict], Any]
    metric: str
    mode: str
    make_fitness: Callable[[dict], Fitness | None] = _no_fitness
    make_constraint: Callable[[dict], "Constraint | None"] = _no_constraint
    resources: Callable[[dict], dict] = _one_cpu
    make_callbacks: Callable[[dict, Path], list] = _no_callbacks
    prepare: Callable[[Any, Path, bool], Any] | None = None
    finish: Callable[[Any, Path, Any], Any] | None = None
    settings_class: type | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"experiment {self.name!r}: mode must be 'max' or 'min', got {self.mode!r}")


def register(exp: Experiment) -> Experiment:
    """Register ``exp`` under ``exp.name`` (a later registration replaces an earlier one)."""
    _REGISTRY[exp.name] = exp
    return exp


def get(name: str) -> Experiment:
    """Return the experiment registered as ``name``, importing its module on first use.

    Raises:
        ConfigError: ``name`` is not a known experiment.
    """
    if name not in _REGISTRY and name in _LAZY:
        importlib.import_module(_LAZY[name])
    if name not in _REGISTRY:
        raise ConfigError(bad_token("experiment", name, list_experiments()))
    return _REGISTRY[name]


def registered(name: str) -> Experiment | None:
    """The experiment registered as ``name`` if its module is already imported (imports nothing)."""
    return _REGISTRY.get(name)


def list_experiments() -> list[str]:
    """Names of the registered and lazily importable experiments."""
    return sorted(set(_REGISTRY) | set(_LAZY))


__all__ = ["Experiment", "Fitness", "get", "list_experiments", "register", "registered"]
