"""Latency-constrained subnet search of a trained supernet (SpaceEvo §5; Once-for-All §3.4 style).

Registers the ``subnet`` experiment (metric ``val_acc_int8``, mode ``max``) over the
:class:`nasq.spaces.subnet.SubnetSpace` of the supernet's candidate space. Its config is
:class:`nasq.settings.SubnetSearchSettings` in dict form, one INT8 latency limit per search.

* The limit is a hard constraint of the evolution core (:class:`nasq.evolution.constraint.Constraint`):
  its cost is the INT8 latency predictor's whole-subnet latency, known before evaluation, so no subnet
  over the limit is ever proposed and the initial population is drawn inside it.
* A trial inherits the supernet's weights (no retraining), recalibrates BatchNorm for its subnet on a few
  training batches and reports its INT8 fake-quant accuracy on the **validation** split
  (``val_acc_int8``) and ``latency_ms`` from the predictor actor (the same file as the constraint). The
  supernet is loaded once per worker process (a cache keyed by the checkpoint file), not once per trial.
* ``prepare`` copies the checkpoint into the run directory (``supernet.pt``: later training cannot delete
  what the search reads) and starts the predictor actor; ``finish`` measures the best subnet on the test
  split and writes ``subnet_best.json`` and the Pareto front (``pareto.csv``/``.png``: accuracy × latency).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from nasq.errors import CheckpointError
from nasq.evolution.constraint import Constraint
from nasq.experiments import Experiment, register
from nasq.settings import SearchSettings, SubnetSearchSettings
from nasq.spaces.subnet import SubnetSpace
from nasq.trainables.spaceevo import _checked, get_actor, predictor_actor_name

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

METRIC = "val_acc_int8"
CHECKPOINT_COPY = "supernet.pt"
BEST_JSON = "subnet_best.json"
_LOADED: dict[tuple, Any] = {}  # (run dir, checkpoint, device, bn batches) -> InheritedSubnets, per process


def settings_of(cfg: dict | SubnetSearchSettings) -> SubnetSearchSettings:
    """The typed settings (SpaceEvo §5 subnet search) of an experiment (or trial) config."""
    return cfg if isinstance(cfg, SubnetSearchSettings) else SubnetSearchSettings.from_config(cfg)


class SubnetLatency:
    """Predicted INT8 latency (ms) of a subnet string: the predictor over its BlockSpec chain (§4.3).

    Picklable (the file is loaded lazily on each side), so the searcher carrying it can be shipped.
    """

    def __init__(self, predictor: str, hyperspace: str, space: str) -> None:
        self.args = (predictor, hyperspace, space)
        self._loaded: tuple | None = None

    def __getstate__(self) -> dict:
        return {"args": self.args, "_loaded": None}

    def __call__(self, genome: str) -> float:
        if self._loaded is None:
            from nasq.latency.predictor import LatencyPredictor

            self._loaded = (LatencyPredictor.load(self.args[0]), SubnetSpace(*self.args[1:]))
        pred, space = self._loaded
        return pred.predict_model(space.candidate.blocks(space.decode_cached(genome)))


def inherited(s: SubnetSearchSettings):
    """The supernet of the search, loaded once in this process (§5 weights inherited, BN recalibrated)."""
    from nasq.supernet.run import InheritedSubnets

    key = (s.supernet, s.checkpoint, s.device, s.bn_batches)
    if key not in _LOADED:
        _LOADED.clear()  # one supernet per worker
        _LOADED[key] = InheritedSubnets(str(s.supernet), s.device, s.checkpoint, s.bn_batches)
    return _LOADED[key]


def subnet_trainable(config: dict) -> None:
    """Tune function trainable: INT8 fake-quant validation accuracy of ``config["genome"]`` (§5)."""
    import torch
    from ray import tune

    s = settings_of(config)
    torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    ev = inherited(s)
    space = SubnetSpace(str(s.hyperspace), str(s.space))
    genome = space.decode(config["genome"])
    keys = [b.key() for b in space.candidate.blocks(genome)]
    lat_ref = get_actor(predictor_actor_name(str(s.predictor_version))).predict_models.remote([keys])
    acc = ev.accuracy(genome, "val", int8=True)
    lat = _checked(ray.get(lat_ref), s.predictor_version, "latency predictor")["latency_ms"][0]
    tune.report({METRIC: acc, "latency_ms": lat, "depth": sum(genome.depths), "eval_seconds":
                 time.perf_counter() - t0})


# -- experiment hooks ---------------------------------------------------------------------------------
def space_of(cfg: dict | SubnetSearchSettings) -> SubnetSpace:
    """The subnet space of the supernet (§5; before :meth:`check` the run file's space)."""
    s = settings_of(cfg)
    if s.space is None or s.hyperspace is None:
        from nasq.supernet.run import read_run_settings

        sup = read_run_settings(str(s.supernet))
        return SubnetSpace(sup.hyperspace, sup.space)
    return SubnetSpace(s.hyperspace, s.space)


def make_constraint(cfg: dict) -> Constraint | None:
    """The latency limit as a hard constraint on predicted INT8 latency (§5: infeasible never proposed)."""
    s = settings_of(cfg)
    if s.max_latency_ms is None or s.predictor is None or s.space is None:
        return None
    return Constraint(SubnetLatency(s.predictor, str(s.hyperspace), s.space), s.max_latency_ms, mode="hard",
                      name="latency_ms", draws=s.constraint_draws)


def make_trainable(cfg: dict):
    """The §5 subnet-evaluation trainable (its actors' repr names trial, genome and score)."""
    from nasq.searchers.status import with_trial_repr

    return with_trial_repr(subnet_trainable, METRIC)


def resources(cfg: dict) -> dict:
    """Resources of one trial: ``cpus_per_trial`` CPUs (a GPU with ``device: cuda``)."""
    s = settings_of(cfg)
    return {"cpu": s.cpus_per_trial, **({"gpu": 1} if s.device == "cuda" else {})}


def prepare(settings: SearchSettings, run_dir: Path, resumed: bool) -> SearchSettings:
    """Copy the supernet checkpoint into the run (once) and start the predictor actor (§5)."""
    from nasq.latency.actors import start_predictor
    from nasq.latency.predictor import LatencyPredictor

    s = settings.options
    _checked({"version": LatencyPredictor.load(s.predictor).version}, s.predictor_version,
             f"latency predictor {s.predictor}")
    pred = start_predictor(s.predictor, name=predictor_actor_name(str(s.predictor_version)))
    _checked(ray.get(pred.info.remote()), s.predictor_version, "latency predictor")
    copy = Path(run_dir) / CHECKPOINT_COPY
    if Path(str(s.checkpoint)) == copy:
        if not copy.is_file():
            raise CheckpointError(f"{copy} is missing; start a new subnet search")
        return settings
    shutil.copyfile(Path(str(s.checkpoint)) / CHECKPOINT_COPY, copy)
    return settings.replace(experiment_config=s.__class__(**{**s.to_config(), "checkpoint": str(copy)}))


def finish(settings: SearchSettings, run_dir: Path, trials: "pd.DataFrame") -> None:
    """The best subnet's validation and test INT8 accuracy (``subnet_best.json``) and the Pareto front of
    INT8 validation accuracy against predicted latency (``pareto.csv``/``.png``; §5 output per limit)."""
    from nasq.pareto import plot_front, write_front_csv

    s = settings.options
    done = trials.dropna(subset=[METRIC]) if METRIC in trials else trials.iloc[0:0]
    if done.empty:
        return
    rows = done[["genome", METRIC, "latency_ms"]].to_dict("records")
    write_front_csv(rows, run_dir / "pareto.csv", acc_key=METRIC, size_key="latency_ms")
    plot_front(rows, run_dir / "pareto.png", acc_key=METRIC, size_key="latency_ms",
               title=f"INT8 accuracy vs predicted latency (limit {s.max_latency_ms:g} ms)")
    best = max(rows, key=lambda r: r[METRIC])
    ev = inherited(s)
    doc = {"genome": best["genome"], "max_latency_ms": s.max_latency_ms, "latency_ms": best["latency_ms"],
           "val_acc_int8": best[METRIC], "test_acc_int8": ev.accuracy(best["genome"], "test", int8=True),
           "test_acc_fp32": ev.accuracy(best["genome"], "test", int8=False), "trials": len(rows)}
    (run_dir / BEST_JSON).write_text(json.dumps(doc, indent=2))


register(
    Experiment(
        name="subnet",
        make_space=space_of,
        make_trainable=make_trainable,
        metric=METRIC,
        mode="max",
        make_constraint=make_constraint,
        resources=resources,
        prepare=prepare,
        finish=finish,
        settings_class=SubnetSearchSettings,
    )
)
