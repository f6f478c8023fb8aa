"""JASQ trainable: weight-shared training, quantized validation, Eq. 1 fitness (JASQ §3, App. 4).

Registers the ``jasq`` experiment (metric ``fitness``, mode ``max``). A trial pulls the
shared tensors its genome uses from the parameter store actor, trains them for
``train_steps`` SGD steps on the train split, pushes the change back (additive deltas,
see :mod:`nasq.param_store`), quantizes the trained weights with the genome's bit policy
and evaluates on the validation split. One step is the whole trial.

Experiment config keys (defaults in :data:`DEFAULTS`): ``dataset``, ``data_root``,
``data_seed``, ``data_limit``; ``combinations`` (B), ``cells`` (N), ``channels`` (F),
``bits`` (choices); ``train_steps``, ``batch_size``, ``lr``; ``bucket_size``;
``bit_rule`` (``{"stem", "classifier", "batchnorm"}`` bits, default 16); ``target_size_mb``
and ``gamma`` (Eq. 1; without a target the fitness is the accuracy); ``param_store`` (the
store actor's name); ``seed`` (supernet initialisation and minibatch order).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from ray import tune

from nasq.data import Splits, load_dataset
from nasq.experiments import Experiment, register
from nasq.fitness import jasq_fitness
from nasq.jasq_report import write_jasq_outputs
from nasq.models.nasnet import BitRule, NetConfig, SharedNasNet, build_network, parameter_keys
from nasq.models.training import TrainSettings, evaluate, quantize_network, train_steps
from nasq.param_store import (
    STORE_FILE,
    ParameterStore,
    StoreCheckpoint,
    create_store_actor,
    get_store_actor,
    store_actor_name,
)
from nasq.spaces.jasq import DEFAULT_BITS, JasqSpace

logger = logging.getLogger(__name__)

DEFAULTS: dict = {"dataset": "digits", "data_root": None, "data_seed": 0, "data_limit": None,
                  "combinations": 5, "cells": 1, "channels": 8, "bits": list(DEFAULT_BITS),
                  "train_steps": 50, "batch_size": 64, "lr": 0.05, "bucket_size": 256,
                  "bit_rule": None, "target_size_mb": None, "gamma": -0.2, "seed": 0, "threads": 1}
CHECKPOINT_FILE = "jasq-trial.json"


def option(cfg: dict, key: str) -> Any:
    """``cfg[key]``, or the default of :data:`DEFAULTS` when absent or None."""
    value = cfg.get(key)
    return DEFAULTS[key] if value is None else value


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, data_root: str | None, seed: int, limit: int | None) -> Splits:
    return load_dataset(dataset, data_root=data_root, seed=seed, limit=limit)


def splits_of(cfg: dict) -> Splits:
    """The data set of an experiment config, loaded once per process."""
    limit = cfg.get("data_limit")
    return _splits(str(option(cfg, "dataset")), cfg.get("data_root"), int(option(cfg, "data_seed")),
                   None if limit is None else int(limit))


def space_of(cfg: dict) -> JasqSpace:
    """The genome space of an experiment config (JASQ §3.2)."""
    return JasqSpace(int(option(cfg, "combinations")), int(option(cfg, "cells")),
                     tuple(int(b) for b in option(cfg, "bits")))


def net_config_of(cfg: dict, splits: Splits) -> NetConfig:
    """Skeleton shape of an experiment config on its data set (JASQ Fig. 2)."""
    return NetConfig(num_classes=splits.num_classes, input_shape=tuple(splits.input_shape),
                     channels=int(option(cfg, "channels")), cells=int(option(cfg, "cells")),
                     combinations=int(option(cfg, "combinations")))


def bit_rule_of(cfg: dict) -> BitRule:
    """Bits of stem, classifier and BN (JASQ §3.4; default 16 each)."""
    return BitRule(**(cfg.get("bit_rule") or {}))


class JasqTrainable(tune.Trainable):
    """One JASQ individual: pull shared weights, train, push, quantize, validate (App. 4, §3.4).

    Besides ``setup``/``step``/``save_checkpoint``/``load_checkpoint`` it implements
    ``reset_config``: Tune reuses trainable actors between trials and hangs a run whose
    trainable refuses; reuse also keeps the loaded data set in the worker.
    """

    def setup(self, config: dict) -> None:
        """Decode the genome and load the data set (cached per worker process)."""
        self._configure(config)

    def reset_config(self, new_config: dict) -> bool:
        """Take the next trial's config when Tune reuses this actor (data stays cached)."""
        self._configure(new_config)
        return True

    def _configure(self, config: dict) -> None:
        torch.set_num_threads(int(option(config, "threads")))
        self.space = space_of(config)
        self.genome_str = self.space.canonical(config["genome"])
        self.genome = self.space.decode(self.genome_str)
        self.splits = splits_of(config)
        self.net_config = net_config_of(config, self.splits)
        self.last_result: dict | None = None

    def step(self) -> dict:
        """Train on the shared weights and report val_acc, sizes, fitness, train_seconds."""
        cfg = self.config
        store = get_store_actor(str(cfg["param_store"]))
        names = parameter_keys(self.genome, self.net_config)
        t0 = time.perf_counter()
        base, versions = _ray_get(store.pull.remote(names, True))
        net = build_network(self.genome, self.net_config, shared=True)
        net.load_state_dict(base)
        seed = int(option(cfg, "seed")) ^ zlib.crc32(f"{self.genome_str}/{self.trial_id}".encode())
        settings = TrainSettings(steps=int(option(cfg, "train_steps")),
                                 batch_size=int(option(cfg, "batch_size")), lr=float(option(cfg, "lr")),
                                 seed=seed)
        loss = train_steps(net, self.splits.train, settings)
        trained = {k: v.detach().clone() for k, v in net.state_dict().items()}
        push = _ray_get(store.push.remote({k: trained[k] - base[k] for k in names}, versions))
        train_seconds = time.perf_counter() - t0
        report = quantize_network(net, self.genome, self.net_config, bit_rule_of(cfg),
                                  int(option(cfg, "bucket_size")))
        val_acc = evaluate(net, self.splits.val)
        target = cfg.get("target_size_mb")
        fitness = val_acc if target is None else jasq_fitness(val_acc, report.size_mb_huffman, float(target),
                                                              float(option(cfg, "gamma")))
        self.last_result = {"val_acc": val_acc, **report.as_dict(), "fitness": fitness,
                            "train_seconds": train_seconds, "train_loss": loss,
                            "stale_tensors": push["stale"],
                            "bits_mean": sum(self.genome.bits) / len(self.genome.bits)}
        return {**self.last_result, "done": True}

    def save_checkpoint(self, checkpoint_dir: str) -> str:
        """Write the trial's genome and last result as JSON."""
        doc = {"genome": self.genome_str, "last_result": self.last_result}
        tmp = Path(checkpoint_dir) / f".{CHECKPOINT_FILE}.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, Path(checkpoint_dir) / CHECKPOINT_FILE)
        return checkpoint_dir

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        """Read a checkpoint written by :meth:`save_checkpoint` for the same genome."""
        from nasq.errors import CheckpointError, bad_state

        path = Path(checkpoint) / CHECKPOINT_FILE
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(bad_state(path, f"unreadable ({exc})", "rerun the trial")) from exc
        if doc.get("genome") != self.genome_str:
            problem = f"it is for genome {doc.get('genome')!r}"
            raise CheckpointError(bad_state(path, problem, "rerun the trial"))
        self.last_result = doc.get("last_result")


def _ray_get(ref):
    import ray

    return ray.get(ref)


def initial_store(cfg: dict) -> ParameterStore:
    """Fresh supernet weights for the shared population (seeded by ``cfg['seed']``)."""
    splits = splits_of(cfg)
    torch.manual_seed(int(option(cfg, "seed")))
    net = SharedNasNet(net_config_of(cfg, splits))
    return ParameterStore(net.state_dict())


def prepare(cfg: dict, run_dir: Path, resumed: bool) -> None:
    """Create the run's parameter store actor, restored from ``RUN_DIR/param_store.pt`` on resume."""
    name = cfg.setdefault("param_store", store_actor_name(Path(run_dir).name))
    path = Path(run_dir) / STORE_FILE
    if resumed and path.is_file():
        store = ParameterStore.load(path)
        logger.info("restored parameter store %s (%d pushes) from %s", name, store.pushes, path)
    else:
        store = initial_store(cfg)
        store.save(path)
    create_store_actor(name, store)


def make_callbacks(cfg: dict, run_dir: Path) -> list:
    """Save the store into the run directory as trials finish and at the end."""
    name = cfg.get("param_store") or store_actor_name(Path(run_dir).name)
    return [StoreCheckpoint(name, str(Path(run_dir) / STORE_FILE))]


def finish(cfg: dict, run_dir: Path) -> None:
    """Write the Pareto front and best genomes of a finished (or resumed) run (JASQ §4)."""
    write_jasq_outputs(run_dir)


register(Experiment(name="jasq", make_space=space_of, make_trainable=lambda cfg: JasqTrainable,
                    metric="fitness", mode="max", make_callbacks=make_callbacks, prepare=prepare,
                    finish=finish,
                    resources=lambda cfg: {"cpu": int(option(cfg, "threads"))}))
