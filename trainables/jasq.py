"""JASQ trainable: weight-shared training, quantized validation, Eq. 1 fitness (JASQ §3, App. 4).

Registers the ``jasq`` experiment (metric ``fitness``, mode ``max``). A trial pulls the
shared tensors its genome uses from the parameter store actor, trains them for
``train_steps`` SGD steps on the train split, pushes the change back (additive deltas,
see :mod:`nasq.param_store`), quantizes the trained weights with the genome's bit policy
and evaluates on the validation split. One step is the whole trial.

The experiment config is :class:`nasq.settings.JasqSettings` in dict form; every function here
reads it back with ``JasqSettings.from_config(cfg)`` (one place for names, defaults and checks).
Weight-sharing options of issue 11 (parent inheritance, BN recalibration) are read by
:class:`SharingOptions` from the same config until ``JasqSettings`` has fields for them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ray import tune

from nasq.data import Splits, load_dataset
from nasq.experiments import Experiment, register
from nasq.fitness import jasq_fitness
from nasq.jasq_report import write_front_outputs
from nasq.errors import ConfigError
from nasq.models.nasnet import (BitRule, NetConfig, SharedNasNet, build_network, parameter_keys,
                                with_running_stats)
from nasq.models.training import TrainSettings, evaluate, quantize_network, recalibrate_bn, train_steps
from nasq.param_store import (
    STORE_FILE,
    ParameterStore,
    StoreCheckpoint,
    create_store_actor,
    get_store_actor,
    store_actor_name,
)
from nasq.settings import JasqSettings, SearchSettings
from nasq.spaces.jasq import JasqSpace

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "jasq-trial.json"


def settings_of(cfg: dict | JasqSettings) -> JasqSettings:
    """The typed settings of an experiment (or trial) config."""
    return cfg if isinstance(cfg, JasqSettings) else JasqSettings.from_config(cfg)


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, data_root: str | None, seed: int, limit: int | None) -> Splits:
    return load_dataset(dataset, data_root=data_root, seed=seed, limit=limit)


def splits_of(cfg: dict) -> Splits:
    """The data set of an experiment config, loaded once per process."""
    s = settings_of(cfg)
    return _splits(s.dataset, s.data_root, s.data_seed, s.data_limit)


def space_of(cfg: dict) -> JasqSpace:
    """The genome space of an experiment config (JASQ §3.2)."""
    s = settings_of(cfg)
    return JasqSpace(s.combinations, s.cells, s.bits)


def net_config_of(cfg: dict, splits: Splits) -> NetConfig:
    """Skeleton shape of an experiment config on its data set (JASQ Fig. 2)."""
    s = settings_of(cfg)
    return NetConfig(num_classes=splits.num_classes, input_shape=tuple(splits.input_shape),
                     channels=s.channels, cells=s.cells, combinations=s.combinations)


def bit_rule_of(cfg: dict) -> BitRule:
    """Bits of stem, classifier and BN (JASQ §3.4; default 16 each)."""
    return BitRule(**(settings_of(cfg).bit_rule or {}))


@dataclass(frozen=True)
class SharingOptions:
    """How a trial uses the shared population's weights (issue 11; JASQ App. 4, SPOS §3.3)."""

    inherit_weights: bool = True  # start from the parent's trained tensors where it shares them
    parent_genome: str | None = None  # the parent's genome (None: the store's nearest snapshot)
    bn_recal_batches: int = 0  # training batches re-estimating BN statistics before validation (0: off)
    max_snapshots: int = 64  # per-genome snapshots the store keeps for children (LRU)

    @classmethod
    def from_config(cls, cfg: dict) -> "SharingOptions":
        """Read and check the options from a trial or experiment config (absent keys: defaults)."""
        d = cls()
        opts = cls(bool(cfg.get("inherit_weights", d.inherit_weights)), cfg.get("parent_genome"),
                   cfg.get("bn_recal_batches", d.bn_recal_batches), cfg.get("max_snapshots", d.max_snapshots))
        for name in ("bn_recal_batches", "max_snapshots"):
            value = getattr(opts, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value!r} must be an integer >= 0")
        if opts.parent_genome is not None and not isinstance(opts.parent_genome, str):
            raise ConfigError(f"parent_genome={opts.parent_genome!r} must be a genome string or None")
        return opts


class JasqTrainable(tune.Trainable):
    """One JASQ individual: pull shared weights, train, push, quantize, validate (App. 4, §3.4).

    Besides ``setup``/``step``/``save_checkpoint``/``load_checkpoint`` it implements
    ``reset_config``: Tune reuses trainable actors between trials and hangs a run whose
    trainable refuses; reuse also keeps the loaded data set in the worker.
    """

    def __repr__(self) -> str:
        """Trial id, short genome and last fitness (what the Ray dashboard lists for this actor)."""
        from nasq.status import trial_repr

        last = getattr(self, "last_result", None) or {}
        return trial_repr("JasqTrainable", self.trial_id, getattr(self, "genome_str", None), "fitness",
                          last.get("fitness"))

    def setup(self, config: dict) -> None:
        """Decode the genome and load the data set (cached per worker process)."""
        self._configure(config)

    def reset_config(self, new_config: dict) -> bool:
        """Take the next trial's config when Tune reuses this actor (data stays cached)."""
        self._configure(new_config)
        return True

    def _configure(self, config: dict) -> None:
        self.settings = settings_of(config)
        self.sharing = SharingOptions.from_config(config)
        torch.set_num_threads(self.settings.threads)
        self.space = space_of(config)
        self.genome_str = self.space.canonical(config["genome"])
        self.genome = self.space.decode(self.genome_str)
        self.splits = splits_of(config)
        self.net_config = net_config_of(config, self.splits)
        self.last_result: dict | None = None

    def step(self) -> dict:
        """Pull (from the parent where inherited), train, push, quantize, recalibrate BN, validate."""
        cfg, s = self.config, self.settings
        store = get_store_actor(str(s.param_store))
        names = parameter_keys(self.genome, self.net_config)
        t0 = time.perf_counter()
        base, versions, inherited = self._pull(store, names)
        net = build_network(self.genome, self.net_config, shared=True)
        net.load_state_dict(base)
        seed = s.train_seed ^ zlib.crc32(f"{self.genome_str}/{self.trial_id}".encode())
        settings = TrainSettings(steps=s.train_steps, batch_size=s.batch_size, lr=s.lr, seed=seed)
        loss = train_steps(net, self.splits.train, settings)
        trained = {k: v.detach().clone() for k, v in net.state_dict().items()}
        snapshot = trained if self.sharing.inherit_weights else None
        push = _ray_get(store.push.remote({k: trained[k] - base[k] for k in names}, versions,
                                          self.genome_str, snapshot))
        train_seconds = time.perf_counter() - t0
        report = quantize_network(net, self.genome, self.net_config, bit_rule_of(cfg), s.bucket_size)
        val_acc = self._validate(net, seed)
        target = s.target_size_mb
        size = report.size_mb_huffman
        fitness = val_acc if target is None else jasq_fitness(val_acc, size, target, s.gamma)
        self.last_result = {"val_acc": val_acc, **report.as_dict(), "fitness": fitness,
                            "train_seconds": train_seconds, "train_loss": loss,
                            "stale_tensors": push["stale"], "inherited_tensors": inherited,
                            "bits_mean": sum(self.genome.bits) / len(self.genome.bits)}
        return {**self.last_result, "done": True}

    def _pull(self, store, names: list[str]) -> tuple[dict, dict, int]:
        """The trial's starting tensors, their global versions and how many came from the parent."""
        if not self.sharing.inherit_weights:
            base, versions = _ray_get(store.pull.remote(names, True))
            return base, versions, 0
        parent = self.sharing.parent_genome
        parent = self.space.canonical(parent) if parent else None
        got = _ray_get(store.pull_inherited.remote(names, parent, parent is None))
        return got["tensors"], got["versions"], len(got["inherited"])

    def _validate(self, net: SharedNasNet, seed: int) -> float:
        """Validation accuracy of the quantized network, BN recalibrated for this genome when asked."""
        batches = self.sharing.bn_recal_batches
        if batches > 0:
            net = recalibrate_bn(with_running_stats(net), self.splits.train, batches,
                                 self.settings.batch_size, seed)
        return evaluate(net, self.splits.val)

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


def initial_store(cfg: dict | JasqSettings) -> ParameterStore:
    """Fresh supernet weights for the shared population (seeded by ``train_seed``)."""
    splits = splits_of(cfg)
    torch.manual_seed(settings_of(cfg).train_seed)
    net = SharedNasNet(net_config_of(cfg, splits))
    sharing = SharingOptions.from_config(cfg) if isinstance(cfg, dict) else SharingOptions()
    return ParameterStore(net.state_dict(), max_snapshots=sharing.max_snapshots)


def prepare(settings: SearchSettings, run_dir: Path, resumed: bool) -> SearchSettings:
    """Create the run's parameter store actor (named after the run), restored from
    ``RUN_DIR/param_store.pt`` on resume (JASQ Appendix 4); return the settings naming it."""
    name = store_actor_name(Path(run_dir).name)
    settings = settings.replace(options={"param_store": name})
    cfg = settings.options
    path = Path(run_dir) / STORE_FILE
    if resumed and path.is_file():
        store = ParameterStore.load(path)
        logger.info("restored parameter store %s (%d pushes) from %s", name, store.pushes, path)
    else:
        store = initial_store(cfg)
        store.save(path)
    create_store_actor(name, store)
    return settings


def make_callbacks(cfg: dict, run_dir: Path) -> list:
    """Save the store into the run directory as trials finish and at the end."""
    name = settings_of(cfg).param_store or store_actor_name(Path(run_dir).name)
    return [StoreCheckpoint(name, str(Path(run_dir) / STORE_FILE))]


def finish(settings: SearchSettings, run_dir: Path, trials: "pd.DataFrame") -> None:
    """Write the Pareto front and best genomes of a finished (or resumed) run (JASQ §4)."""
    write_front_outputs(run_dir, trials, title="JASQ: validation accuracy vs Huffman size")


def _trainable(cfg: dict) -> type:
    return JasqTrainable


def resources(cfg: dict) -> dict:
    """Resources of one trial: ``cpus_per_trial`` CPUs."""
    return {"cpu": settings_of(cfg).cpus_per_trial}


register(Experiment(name="jasq", make_space=space_of, make_trainable=_trainable,
                    metric="fitness", mode="max", make_callbacks=make_callbacks, prepare=prepare,
                    finish=finish, resources=resources, settings_class=JasqSettings))
