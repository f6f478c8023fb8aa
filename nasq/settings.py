"""Typed settings of a search: the common search options and one frozen dataclass per experiment.

Every field has a default and a one-line comment (the comment is also its ``--help`` text), and
``__post_init__`` validates ranges, types and names, raising a one-line :class:`ConfigError` that
names the field and the fix. The same concept has the same name in every experiment: ``data_limit``
(examples kept), ``bits`` (bit widths a genome may use), ``cpus_per_trial`` (CPUs Ray reserves for a
trial, also its torch threads), ``target_size_mb``/``gamma`` (JASQ Eq. 1).

A search resolves once into one :class:`SearchSettings` (its ``options`` are the typed experiment
settings, its ``exp`` the registered :class:`nasq.experiments.Experiment`), which the runner, the
report and the experiment's hooks receive. Its JSON form (the ``settings`` of ``RUN_DIR/nasq-run.json``)
is also a valid ``--config`` file, see :func:`load_config`. This module imports no Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from nasq.errors import ConfigError, DataError

if TYPE_CHECKING:
    from nasq.experiments import Experiment

CONSTRAINT_MODES = ("hard", "penalty", "after")
NB201_DATASETS = ("cifar10", "cifar100", "imagenet16")
DATA_SETS = "digits | cifar10 | npz:PATH"
MIN_DATA_LIMIT = 10  # nasq.data needs a few examples per class to split


# -- field checks (one-line messages naming the field, its flag and the fix) ---------------------------
def flag(name: str) -> str:
    """The CLI flag of a settings field (``data_limit`` -> ``--data-limit``)."""
    return "--" + name.replace("_", "-")


def _fail(name: str, value: Any, need: str) -> ConfigError:
    return ConfigError(f"{name} ({flag(name)}) must be {need}, got {value!r}")


def _int(name: str, value: Any, low: int | None = None, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, value, "an integer" + (f" >= {low}" if low is not None else ""))
    if low is not None and value < low:
        raise _fail(name, value, f"an integer >= {low}")
    return int(value)


def _num(name: str, value: Any, low: float | None = None, strict: bool = True, optional: bool = False,
         need: str = "") -> float | None:
    if value is None and optional:
        return None
    bound = "" if low is None else (f" > {low:g}" if strict else f" >= {low:g}")
    need = need or f"a finite number{bound}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, value, need)
    if low is not None and (value <= low if strict else value < low):
        raise _fail(name, value, need)
    return float(value)


def _str(name: str, value: Any, optional: bool = False, choices: tuple[str, ...] = ()) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(name, value, "a non-empty string")
    if choices and value not in choices:
        raise _fail(name, value, "one of " + " | ".join(choices))
    return value


def _ints(name: str, value: Any, low: int = 1) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
        if not all(t.isascii() and t.isdecimal() for t in value):
            raise _fail(name, ",".join(value), "comma-separated integers like 4,8,16")
        value = [int(t) for t in value]
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(name, value, "a non-empty list of integers like 4,8,16")
    out = tuple(_int(name, v, low) for v in value)
    if len(set(out)) != len(out):
        raise _fail(name, value, "a list of distinct integers")
    return out


def _path(value: str | None) -> str | None:
    """An absolute path (trials run in their own folders, so relative paths must be resolved first)."""
    return None if value is None else os.path.abspath(os.path.expanduser(value))


def _dataset(name: str, spec: Any) -> str:
    spec = _str(name, spec)
    if spec in ("digits", "cifar10"):
        return spec
    if spec.startswith("npz:") and len(spec) > 4:
        return "npz:" + _path(spec[4:])
    raise ConfigError(f"unknown data set {spec!r} ({flag(name)}); use one of {DATA_SETS}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@functools.lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Field name -> its one-line comment in the class source (the ``--help`` text)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (frozen app): no help texts
        return {}
    pattern = re.compile(r"^\s+(\w+): .*?  # (.*)$")
    return {m.group(1): m.group(2).strip() for m in map(pattern.match, source.splitlines()) if m}


# -- experiment settings -------------------------------------------------------------------------------
class ExperimentSettings:
    """Base of the typed experiment settings: conversion to and from the trial config dict."""

    EXPERIMENT: ClassVar[str] = ""
    # fields the runner fills in (not CLI flags)
    DERIVED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object = "settings") -> "ExperimentSettings":
        """Build from a mapping of field names (a config file or a run file); unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: the {cls.EXPERIMENT} settings must be a mapping of field names")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{source}: unknown {cls.EXPERIMENT} setting(s) {unknown}; known: {names}")
        return cls(**{k: _plain(v) for k, v in data.items()})

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ExperimentSettings":
        """Read the settings back from a trial's config dict (keys of other components are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _plain(v) for k, v in cfg.items() if k in names})

    def to_config(self) -> dict:
        """The JSON-able dict form (the run file's ``experiment_config`` and every trial's config)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def check(self) -> "ExperimentSettings":
        """Checks that read files (data, tables, checkpoints), run once on the driver before Ray starts.

        Returns:
            The settings with derived fields filled in (e.g. a network's layer count).
        """
        return self


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class NB201Settings(ExperimentSettings):
    """The NAS-Bench-201 table lookup experiment (``nasq search nb201``)."""

    EXPERIMENT: ClassVar[str] = "nb201"

    table: str | None = None  # NB201 accuracy CSV (None: ../shared/data/nb201/ next to the repository)
    dataset: str = "cifar10"  # accuracy column: cifar10 | cifar100 | imagenet16
    latency_table: str | None = None  # NB201 latency CSV (HELP benchmark)
    latency_column: str | None = None  # device column of the latency table, e.g. lat_ms_raspi4
    max_latency_ms: float | None = None  # latency limit in ms (None: no constraint)
    constraint_mode: str = "hard"  # hard: over-limit cells never proposed (evolution core); penalty: fitness × (cost/limit)^γ; after: evaluated, then failed
    penalty_gamma: float = -0.2  # exponent γ < 0 of the penalty mode (JASQ Eq. 1's shape)
    constraint_draws: int = 10  # hard mode: feasible new cells drawn per proposal, the slowest proposed (1: the first)
    sim_time: float = 0.0  # seconds a trial sleeps at most, scaled by the cell's cost (0: no sleep)
    cpus_per_trial: float = 1.0  # CPUs Ray reserves for one trial

    def __post_init__(self) -> None:
        if self.table is not None:
            _set(self, "table", _path(_str("table", self.table)))
        _str("dataset", self.dataset, choices=NB201_DATASETS)
        if self.latency_table is not None:
            _set(self, "latency_table", _path(_str("latency_table", self.latency_table)))
        _str("latency_column", self.latency_column, optional=True)
        if (self.latency_table is None) != (self.latency_column is None):
            raise ConfigError("a latency table needs both --latency-table and --latency-column; pass both")
        _set(self, "max_latency_ms", _num("max_latency_ms", self.max_latency_ms, 0, optional=True))
        if self.max_latency_ms is not None and self.latency_table is None:
            raise ConfigError("--max-latency-ms needs --latency-table and --latency-column")
        _str("constraint_mode", self.constraint_mode, choices=CONSTRAINT_MODES)
        gamma = _num("penalty_gamma", self.penalty_gamma, need="a finite negative number, like -0.2")
        if gamma >= 0:
            raise _fail("penalty_gamma", gamma, "a finite negative number, like -0.2")
        _set(self, "penalty_gamma", gamma)
        _int("constraint_draws", self.constraint_draws, 1)
        _set(self, "sim_time", _num("sim_time", self.sim_time, 0, strict=False))
        _set(self, "cpus_per_trial", _num("cpus_per_trial", self.cpus_per_trial, 0))

    def check(self) -> "NB201Settings":
        """Resolve the default table path and load the tables (row count, columns) before Ray."""
        from nasq.nb201_table import default_table_path, load_table

        settings = self
        if self.table is None:
            path = default_table_path()
            if path is None:
                raise DataError("no NB201 table found at ../shared/data/nb201/; pass --table PATH")
            settings = dataclasses.replace(self, table=str(path))
        load_table(settings.table, settings.dataset, settings.latency_table, settings.latency_column)
        return settings


def _check_data_fields(settings: Any) -> None:
    """Check and normalise the data fields an experiment shares (dataset, data_root, data_seed, data_limit)."""
    _set(settings, "dataset", _dataset("dataset", settings.dataset))
    if settings.data_root is not None:
        _set(settings, "data_root", _path(_str("data_root", settings.data_root)))
    _int("data_seed", settings.data_seed, 0)
    _int("data_limit", settings.data_limit, 1, optional=True)
    _check_data(settings.dataset, settings.data_root, settings.data_limit)


def _check_data(dataset: str, data_root: str | None, data_limit: int | None) -> None:
    if data_root is not None and dataset != "cifar10":
        raise ConfigError(f"{flag('data_root')} is for cifar10 only; drop it for {dataset!r}")
    if data_limit is not None and data_limit < MIN_DATA_LIMIT:
        raise _fail("data_limit", data_limit, f"None or an integer >= {MIN_DATA_LIMIT} (a few examples "
                    "per class to split)")


def _check_eq1(target_size_mb: float | None, gamma: float) -> None:
    if target_size_mb is not None:
        _num("target_size_mb", target_size_mb, 0, need="a positive size in MB")
    g = _num("gamma", gamma, need="a finite negative number (JASQ uses about -0.2)")
    if g >= 0:
        raise _fail("gamma", gamma, "a finite negative number (JASQ uses about -0.2)")


@dataclass(frozen=True)
class JasqSettings(ExperimentSettings):
    """Joint architecture and quantization search with a weight-shared population (JASQ §3, App. 4)."""

    EXPERIMENT: ClassVar[str] = "jasq"
    DERIVED: ClassVar[tuple[str, ...]] = ("param_store",)

    dataset: str = "digits"  # digits | cifar10 | npz:PATH
    data_root: str | None = None  # torchvision CIFAR-10 folder (cifar10 only)
    data_seed: int = 0  # seed of the train/val/test split
    data_limit: int | None = None  # use at most this many examples (None: all)
    combinations: int = 5  # B, combinations per cell
    cells: int = 1  # N, normal cells per stage (3N+2 cells)
    channels: int = 8  # F, channels of the first stage
    bits: tuple[int, ...] = (4, 8, 16)  # bit widths a cell may use
    train_steps: int = 50  # SGD steps per trial on the shared weights
    batch_size: int = 64  # minibatch size
    lr: float = 0.05  # SGD learning rate
    bucket_size: int = 256  # values per quantization bucket (JASQ §3.4)
    bit_rule: dict | None = None  # bits of stem, classifier and batchnorm (None: 16 each)
    target_size_mb: float | None = None  # target size TS of Eq. 1 in MB (None: fitness = accuracy)
    gamma: float = -0.2  # Eq. 1 exponent over the target size (< 0)
    train_seed: int = 0  # supernet initialisation and minibatch order
    inherit_weights: bool = True  # a child starts from the nearest evaluated genome's trained tensors it shares
    bn_recal_batches: int = 0  # training batches re-estimating BN statistics before validation (0: off)
    max_snapshots: int = 64  # per-genome tensor snapshots the parameter store keeps for children (LRU)
    cpus_per_trial: float = 1.0  # CPUs Ray reserves for one trial (also its torch threads)
    param_store: str | None = None  # name of the run's parameter-store actor (set by the runner)

    def __post_init__(self) -> None:
        _check_data_fields(self)
        for name in ("combinations", "cells", "channels", "train_steps", "batch_size", "bucket_size"):
            _int(name, getattr(self, name), 1)
        _set(self, "bits", _ints("bits", self.bits))
        _set(self, "lr", _num("lr", self.lr, 0))
        if self.bit_rule is not None and not isinstance(self.bit_rule, Mapping):
            raise _fail("bit_rule", self.bit_rule, "a mapping like {stem: 16, classifier: 16, batchnorm: 16}")
        _check_eq1(self.target_size_mb, self.gamma)
        _set(self, "gamma", float(self.gamma))
        if self.target_size_mb is not None:
            _set(self, "target_size_mb", float(self.target_size_mb))
        _int("train_seed", self.train_seed, 0)
        if not isinstance(self.inherit_weights, bool):
            raise _fail("inherit_weights", self.inherit_weights, "true or false")
        _int("bn_recal_batches", self.bn_recal_batches, 0)
        _int("max_snapshots", self.max_snapshots, 0)
        _set(self, "cpus_per_trial", _num("cpus_per_trial", self.cpus_per_trial, 0))
        _str("param_store", self.param_store, optional=True)

    @property
    def threads(self) -> int:
        """Torch threads of a trial: its CPUs, at least one."""
        return max(1, int(self.cpus_per_trial))

    def check(self) -> "JasqSettings":
        """Load the data set once (missing or corrupt files fail here, before Ray)."""
        from nasq.data import load_dataset

        load_dataset(self.dataset, data_root=self.data_root, seed=self.data_seed, limit=self.data_limit)
        return self


@dataclass(frozen=True)
class QuantPolicySettings(ExperimentSettings):
    """Per-layer bit policy of a trained torchvision network (JASQ §4.1)."""

    EXPERIMENT: ClassVar[str] = "quant-policy"
    DERIVED: ClassVar[tuple[str, ...]] = ("num_layers", "weights_file")

    model: str = "resnet18"  # torchvision network, e.g. resnet18 | mobilenet_v2 | squeezenet1_1
    checkpoint: str | None = None  # trained float state dict (torch.save of state_dict())
    weights: str | None = None  # torchvision pretrained weights, e.g. DEFAULT (online)
    train_epochs: float | None = None  # train (or fine-tune) this many epochs on the training split first
    lr: float = 0.05  # training learning rate
    batch_size: int = 128  # training batch size
    dataset: str = "digits"  # digits | cifar10 | npz:PATH
    data_root: str | None = None  # torchvision CIFAR-10 folder (cifar10 only)
    data_seed: int = 0  # seed of the train/val/test split (and of training)
    data_limit: int | None = None  # use at most this many examples (None: all)
    bits: tuple[int, ...] = (4, 8, 16)  # bit widths a layer may use
    bucket_size: int = 256  # values per quantization bucket
    target_size_mb: float | None = None  # target size TS of Eq. 1 in MB (None: fitness = accuracy)
    gamma: float = -0.2  # Eq. 1 exponent over the target size (< 0)
    cpus_per_trial: float = 1.0  # CPUs Ray reserves for one trial (also its torch threads)
    report_top: int = 3  # found policies listed in the report
    num_layers: int | None = None  # quantizable layers of the model (filled in before the search)
    weights_file: str | None = None  # float weights the trials read (set by the experiment's prepare)

    def __post_init__(self) -> None:
        _str("model", self.model)
        for name in ("checkpoint", "weights_file"):
            if getattr(self, name) is not None:
                _set(self, name, _path(_str(name, getattr(self, name))))
        _str("weights", self.weights, optional=True)
        if self.train_epochs is not None:
            _set(self, "train_epochs", _num("train_epochs", self.train_epochs, 0))
        if self.checkpoint and (self.weights or self.train_epochs):
            raise ConfigError("--checkpoint excludes --weights and --train-epochs; drop one")
        if not (self.checkpoint or self.weights or self.train_epochs or self.weights_file):
            raise ConfigError("no float weights: pass --checkpoint PATH, --weights DEFAULT or "
                              "--train-epochs E")
        _set(self, "lr", _num("lr", self.lr, 0))
        _int("batch_size", self.batch_size, 1)
        _check_data_fields(self)
        _set(self, "bits", _ints("bits", self.bits))
        _int("bucket_size", self.bucket_size, 1)
        _check_eq1(self.target_size_mb, self.gamma)
        _set(self, "gamma", float(self.gamma))
        if self.target_size_mb is not None:
            _set(self, "target_size_mb", float(self.target_size_mb))
        _set(self, "cpus_per_trial", _num("cpus_per_trial", self.cpus_per_trial, 0))
        _int("report_top", self.report_top, 1)
        _int("num_layers", self.num_layers, 1, optional=True)

    @property
    def threads(self) -> int:
        """Torch threads of a trial: its CPUs, at least one."""
        return max(1, int(self.cpus_per_trial))

    def check(self) -> "QuantPolicySettings":
        """Check the model, the data set and the checkpoint before Ray; fill in ``num_layers``."""
        from nasq.data import load_dataset
        from nasq.models.torchvision_nets import (
            build_torchvision,
            check_model,
            load_state_dict,
            quantizable_layers,
        )

        check_model(self.model)
        splits = load_dataset(self.dataset, data_root=self.data_root, seed=self.data_seed,
                              limit=self.data_limit)
        net = build_torchvision(self.model, splits.num_classes, splits.input_shape)
        if self.checkpoint:
            load_state_dict(net, self.checkpoint)
        return dataclasses.replace(self, num_layers=len(quantizable_layers(net)))


def _names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise _fail(name, value, "comma-separated names like mbv2,fused_mb")
    if len(set(value)) != len(value):
        raise _fail(name, value, "distinct names")
    return tuple(value)


@dataclass(frozen=True)
class LutSettings(ExperimentSettings):
    """Block-wise KD accuracy table build (``nasq lut build``; SpaceEvo §4.5)."""

    EXPERIMENT: ClassVar[str] = "lut"

    dataset: str = "digits"  # digits | cifar10 | npz:PATH
    data_root: str | None = None  # torchvision CIFAR-10 folder (cifar10 only)
    data_seed: int = 0  # seed of the train/val/test split
    data_limit: int | None = None  # use at most this many examples (None: all)
    hyperspace: str = "spaceevo"  # spaceevo | spaceevo-tiny, optionally NAME:RES (e.g. spaceevo:224)
    block_types: tuple[str, ...] = ()  # block types to build tables for (empty: all of the hyperspace's)
    teacher_checkpoint: str | None = None  # trained teacher (teacher.pt of a build or a Teacher state_dict)
    teacher_type: str = "mbv2"  # block type of the widest homogeneous teacher chain
    teacher_steps: int = 300  # SGD steps to train the teacher (without --teacher-checkpoint)
    steps: int = 200  # fp32 sandwich steps per (stage, block type)
    qat_steps: int = 50  # LSQ+ INT8 sandwich steps after the fp32 phase
    batch_size: int = 64  # examples per step
    lr: float = 0.003  # Adam learning rate of the fp32 phase (cosine to 0)
    qat_lr: float = 0.0005  # Adam learning rate of the LSQ+ phase (cosine to 0)
    eval_examples: int = 256  # validation examples each setting is evaluated on (at most the split)
    bn_batches: int = 2  # training batches that recalibrate BatchNorm before each setting is evaluated
    mixed_rows: int = 8  # held-out mixed settings evaluated per (stage, type) to measure the estimator
    seed: int = 0  # initialisation, minibatch and setting draws
    cpus_per_task: float = 1.0  # CPUs Ray reserves for one (stage, type) training (also its torch threads)
    retries: int = 1  # Ray retries of a training whose worker died

    def __post_init__(self) -> None:
        _check_data_fields(self)
        from nasq.spaces.spaceevo import SPACEEVO_TYPES, space_from_name

        try:
            types = space_from_name(_str("hyperspace", self.hyperspace)).hyperspace.types
        except ConfigError as exc:
            raise ConfigError(f"hyperspace (--hyperspace): {exc}") from None
        _set(self, "block_types", _names("block_types", self.block_types) if self.block_types else ())
        bad = [t for t in self.block_types if t not in types]
        if bad:
            raise _fail("block_types", bad[0], "block types of the hyperspace: " + ",".join(types))
        if self.teacher_checkpoint is not None:
            _set(self, "teacher_checkpoint", _path(_str("teacher_checkpoint", self.teacher_checkpoint)))
        _str("teacher_type", self.teacher_type, choices=SPACEEVO_TYPES)
        _int("teacher_steps", self.teacher_steps, 0)
        for name in ("steps", "batch_size", "eval_examples"):
            _int(name, getattr(self, name), 1)
        for name in ("qat_steps", "bn_batches", "mixed_rows", "seed", "retries"):
            _int(name, getattr(self, name), 0)
        for name in ("lr", "qat_lr", "cpus_per_task"):
            _set(self, name, _num(name, getattr(self, name), 0))

    @property
    def threads(self) -> int:
        """Torch threads of one training: its CPUs, at least one."""
        return max(1, int(self.cpus_per_task))

    def result_fields(self) -> dict:
        """The fields that change the table's numbers (a resumed build must match them)."""
        skip = {"cpus_per_task", "retries"}
        return {k: v for k, v in self.to_config().items() if k not in skip}

    def check(self) -> "LutSettings":
        """Load the data set and read the teacher checkpoint once, before Ray starts."""
        from nasq.bkd.teacher import load_teacher
        from nasq.data import load_dataset
        from nasq.spaces.spaceevo import space_from_name

        load_dataset(self.dataset, data_root=self.data_root, seed=self.data_seed, limit=self.data_limit)
        if self.teacher_checkpoint is not None:
            if not os.path.isfile(self.teacher_checkpoint):
                raise ConfigError(f"--teacher-checkpoint {self.teacher_checkpoint} is not a file; pass a "
                                  "teacher.pt of an earlier build or leave it out to train one")
            load_teacher(self.teacher_checkpoint, space_from_name(self.hyperspace).hyperspace,
                         self.teacher_type)
        return self


def _floats(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [t.strip() for t in value.split(",") if t.strip()]
        try:
            value = [float(t) if t.isascii() else math.nan for t in parts]
        except ValueError:
            raise _fail(name, ",".join(parts), "comma-separated positive numbers like 5,10,15") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _fail(name, value, "comma-separated positive numbers like 5,10,15")
    out = tuple(_num(name, v, 0, need="positive finite numbers like 5,10,15") for v in value)
    if len(set(out)) != len(out):
        raise _fail(name, value, "distinct limits")
    return out


@dataclass(frozen=True)
class SpaceEvoSettings(ExperimentSettings):
    """Search of a quantization-friendly search space (SpaceEvo §4.2 Q-T score, §4.4 aging evolution)."""

    EXPERIMENT: ClassVar[str] = "spaceevo"
    DERIVED: ClassVar[tuple[str, ...]] = ("lut_version", "predictor_version")

    lut: str | None = None  # accuracy table folder of `nasq lut build` (lut.csv + lut.json)
    predictor: str | None = None  # INT8 latency predictor file of `nasq latency build --hyperspace`
    constraints_ms: tuple[float, ...] = ()  # INT8 latency limits T_i in ms, e.g. 5,10,15
    hyperspace: str | None = None  # spaceevo | spaceevo-tiny | NAME:RES (None: the LUT's)
    qt_subnets: int = 5000  # subnets sampled per candidate space for its Q-T score
    top_k: int = 20  # best subnets averaged per latency limit
    variant: str = "paper"  # Q-T score: paper (mean 1/loss of the top k) | code (1/(lat_loss x mean loss))
    penalty: float = 0.0  # Q-T contribution of a limit no sampled subnet meets
    qt_seed: int = 0  # seed of the subnet draw (a space always gets the same score)
    cpus_per_trial: float = 1.0  # CPUs Ray reserves for one trial
    lut_version: str | None = None  # content hash of the table (filled in before the search)
    predictor_version: str | None = None  # content hash of the predictor (filled in before the search)
    # the whole chain (§4: predictor build -> LUT build -> space search), used only without --lut/--predictor
    dataset: str | None = None  # chain: digits | cifar10 | npz:PATH (None: pass --lut and --predictor)
    data_root: str | None = None  # torchvision CIFAR-10 folder (cifar10 only)
    data_seed: int = 0  # seed of the train/val/test split
    data_limit: int | None = None  # use at most this many examples (None: all)
    predictor_samples: int = 250  # chain: body blocks measured for the predictor (`nasq latency build`)
    predictor_calib_chains: int = 24  # chain: subnets measured to calibrate the predictor's chain overhead
    predictor_repeats: int = 50  # chain: timed runs per latency measurement
    predictor_warmup: int = 10  # chain: untimed runs before each measurement
    predictor_actors: int = 2  # chain: measuring Ray actors, one CPU each (0: measure in the driver)
    predictor_seed: int = 0  # chain: seed of the measured block and subnet draws
    lut_teacher_checkpoint: str | None = None  # chain: trained teacher for the table (None: train one)
    lut_teacher_type: str = LutSettings.teacher_type  # chain: block type of the widest teacher chain
    lut_teacher_steps: int = LutSettings.teacher_steps  # chain: SGD steps to train the teacher
    lut_steps: int = LutSettings.steps  # chain: fp32 sandwich steps per (stage, block type)
    lut_qat_steps: int = LutSettings.qat_steps  # chain: LSQ+ INT8 sandwich steps after the fp32 phase
    lut_batch_size: int = LutSettings.batch_size  # chain: examples per step of the table build
    lut_lr: float = LutSettings.lr  # chain: Adam learning rate of the fp32 phase
    lut_qat_lr: float = LutSettings.qat_lr  # chain: Adam learning rate of the LSQ+ phase
    lut_eval_examples: int = LutSettings.eval_examples  # chain: validation examples per evaluated setting
    lut_bn_batches: int = LutSettings.bn_batches  # chain: batches recalibrating BatchNorm per evaluation
    lut_mixed_rows: int = LutSettings.mixed_rows  # chain: held-out mixed settings per (stage, type)
    lut_seed: int = LutSettings.seed  # chain: initialisation, minibatch and setting draws of the table build
    lut_cpus_per_task: float = LutSettings.cpus_per_task  # chain: CPUs of one (stage, type) training
    lut_retries: int = LutSettings.retries  # chain: Ray retries of a training whose worker died

    def __post_init__(self) -> None:
        for name in ("lut", "predictor"):
            if getattr(self, name) is not None:
                _set(self, name, _path(_str(name, getattr(self, name))))
        if (self.lut is None) != (self.predictor is None):
            given, other = ("--lut", "--predictor FILE") if self.lut else ("--predictor", "--lut DIR")
            raise ConfigError(f"{given} needs {other} too: pass both, or neither and --data digits|cifar10|"
                              "npz:PATH to build them first (the whole chain)")
        self._check_chain_fields()
        _set(self, "constraints_ms", _floats("constraints_ms", self.constraints_ms) if self.constraints_ms
             else ())
        if self.hyperspace is not None:
            from nasq.spaces.spaceevo import space_from_name

            try:
                space_from_name(_str("hyperspace", self.hyperspace))
            except ConfigError as exc:
                raise ConfigError(f"hyperspace (--hyperspace): {exc}") from None
        _int("qt_subnets", self.qt_subnets, 1)
        _int("top_k", self.top_k, 1)
        _str("variant", self.variant, choices=("paper", "code"))
        _set(self, "penalty", _num("penalty", self.penalty))
        _int("qt_seed", self.qt_seed, 0)
        _set(self, "cpus_per_trial", _num("cpus_per_trial", self.cpus_per_trial, 0))
        _str("lut_version", self.lut_version, optional=True)
        _str("predictor_version", self.predictor_version, optional=True)

    def _check_chain_fields(self) -> None:
        """Validate the whole-chain fields (§4): data, predictor counts and the ``lut_*`` training fields."""
        if self.dataset is not None:
            _check_data_fields(self)
        else:
            _int("data_seed", self.data_seed, 0)
            if self.data_root is not None or self.data_limit is not None:
                raise ConfigError("--data-root and --data-limit are for the whole chain; pass --data "
                                  "digits|cifar10|npz:PATH too, or drop them")
        for name, low in (("predictor_samples", 2), ("predictor_calib_chains", 0), ("predictor_repeats", 1),
                          ("predictor_warmup", 0), ("predictor_actors", 0), ("predictor_seed", 0),
                          ("lut_teacher_steps", 0), ("lut_steps", 1), ("lut_qat_steps", 0),
                          ("lut_batch_size", 1), ("lut_eval_examples", 1), ("lut_bn_batches", 0),
                          ("lut_mixed_rows", 0), ("lut_seed", 0), ("lut_retries", 0)):
            _int(name, getattr(self, name), low)
        for name in ("lut_lr", "lut_qat_lr", "lut_cpus_per_task"):
            _set(self, name, _num(name, getattr(self, name), 0))
        from nasq.spaces.spaceevo import SPACEEVO_TYPES

        _str("lut_teacher_type", self.lut_teacher_type, choices=SPACEEVO_TYPES)
        if self.lut_teacher_checkpoint is not None:
            _set(self, "lut_teacher_checkpoint", _path(_str("lut_teacher_checkpoint",
                                                            self.lut_teacher_checkpoint)))

    @property
    def is_chain(self) -> bool:
        """Whether these settings run the whole chain (SpaceEvo §4): ``--data``, no --lut/--predictor."""
        return self.dataset is not None and self.lut is None and self.predictor is None

    def lut_settings(self) -> LutSettings:
        """The accuracy-table build (§4.5) of the whole chain: the data fields, the ``lut_*`` fields and the
        hyperspace (every block type: the search needs the whole table)."""
        if self.dataset is None:
            raise ConfigError("the whole chain needs --data digits|cifar10|npz:PATH")
        own = {f.name for f in dataclasses.fields(LutSettings)}
        values = {name[4:]: getattr(self, name) for name in (f.name for f in dataclasses.fields(self))
                  if name.startswith("lut_") and name[4:] in own}
        return LutSettings(dataset=self.dataset, data_root=self.data_root, data_seed=self.data_seed,
                           data_limit=self.data_limit, hyperspace=self.hyperspace or LutSettings.hyperspace,
                           **values)

    def check_chain(self) -> "SpaceEvoSettings":
        """The checks of the whole chain (§4) before Ray: limits, data set and teacher checkpoint; fills in
        the hyperspace (default ``spaceevo``), which the predictor, the table and the search share."""
        if not self.constraints_ms:
            raise ConfigError("constraints_ms (--constraints-ms) is required: INT8 latency limits in ms "
                              "like 5,10,15")
        if self.lut_teacher_checkpoint is not None and not os.path.isfile(self.lut_teacher_checkpoint):
            raise ConfigError(f"--lut-teacher-checkpoint {self.lut_teacher_checkpoint} is not a file; pass a "
                              "teacher.pt of an earlier build or leave it out to train one")
        self.lut_settings().check()
        return dataclasses.replace(self, hyperspace=self.hyperspace or LutSettings.hyperspace)

    def check(self) -> "SpaceEvoSettings":
        """Read the table and the predictor once before Ray; fill in the hyperspace and both versions
        (the whole chain's settings get :meth:`check_chain`)."""
        from nasq.bkd.table import AccuracyLUT
        from nasq.latency.predictor import LatencyPredictor
        from nasq.spaces.spaceevo import space_from_name

        if self.is_chain:
            return self.check_chain()
        if not self.lut or not self.predictor:
            raise ConfigError("nasq search spaceevo needs --lut DIR (`nasq lut build`) and --predictor FILE "
                              "(`nasq latency build --hyperspace ...`), or --data digits|cifar10|npz:PATH to "
                              "build both first (the whole chain)")
        if not self.constraints_ms:
            raise ConfigError("constraints_ms (--constraints-ms) is required: INT8 latency limits in ms "
                              "like 5,10,15")
        lut = AccuracyLUT.load(self.lut)
        name = lut.hyperspace_name
        if self.hyperspace is not None and space_from_name(self.hyperspace).hyperspace != lut.hyperspace:
            raise ConfigError(f"--hyperspace {self.hyperspace} differs from the hyperspace {name} the table "
                              f"{self.lut} was built for; pass --hyperspace {name} or another --lut")
        missing = lut.missing_pairs()
        if missing:
            raise DataError(f"accuracy table {self.lut} has no row for {len(missing)} (stage, block type) "
                            f"pair(s), e.g. {missing[0]}; rebuild it with `nasq lut build` over the whole "
                            "hyperspace")
        pred = LatencyPredictor.load(self.predictor)  # a foreign or corrupt file is one line here
        built = pred.meta.get("hyperspace", pred.meta.get("space"))  # `nasq latency build` records it
        try:
            other = space_from_name(built).hyperspace if isinstance(built, str) else None
        except ConfigError:
            other = None
        if other is None:  # a hand-made block space (or none recorded) need not cover the hyperspace's blocks
            raise ConfigError(f"predictor {self.predictor} was built for {built or 'an unrecorded block set'}, "
                              f"not for a hyperspace; build one with `nasq latency build --hyperspace {name}`")
        if other != lut.hyperspace:
            raise ConfigError(f"predictor {self.predictor} was built for hyperspace {built}, the table for "
                              f"{name}; build one with `nasq latency build --hyperspace {name}`")
        return dataclasses.replace(self, hyperspace=self.hyperspace or name, lut_version=lut.version,
                                   predictor_version=pred.version)


SUPERNET_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SupernetSettings(ExperimentSettings):
    """Quantized-for-all supernet training on Ray Train (``nasq supernet train``; SpaceEvo §5)."""

    EXPERIMENT: ClassVar[str] = "supernet"

    space: str = ""  # candidate space string of the hyperspace, e.g. mbv2:16-32|fused_mb:24-40|...
    hyperspace: str = "spaceevo"  # spaceevo | spaceevo-tiny, optionally NAME:RES (e.g. spaceevo:224)
    dataset: str = "digits"  # digits | cifar10 | npz:PATH
    data_root: str | None = None  # torchvision CIFAR-10 folder (cifar10 only)
    data_seed: int = 0  # seed of the train/val/test split
    data_limit: int | None = None  # use at most this many examples (None: all)
    epochs: int = 2  # fp32 sandwich-rule epochs (phase 1)
    qat_epochs: int = 1  # LSQ+ fake-quant epochs (phase 2, after the fp32 ones)
    workers: int = 2  # Ray Train workers (DDP), one CPU (or GPU) each
    batch_size: int = 32  # examples per step and worker
    lr: float = 0.05  # SGD (momentum 0.9) learning rate of phase 1, cosine to 0
    qat_lr: float = 0.01  # SGD learning rate of phase 2, cosine to 0
    n_random: int = 2  # random subnets per step beside the largest and the smallest (sandwich rule)
    kd_temperature: float = 1.0  # softmax temperature of the inplace distillation
    bn_batches: int = 2  # training batches that recalibrate BatchNorm before each evaluation
    seed: int = 0  # initial weights and the subnets drawn at each step
    device: str = "auto"  # auto (CUDA when the cluster has a GPU per worker) | cpu | cuda

    def __post_init__(self) -> None:
        from nasq.errors import GenomeError
        from nasq.spaces.spaceevo import space_from_name
        from nasq.supernet.train import SupernetTrainSettings

        _check_data_fields(self)
        try:
            hyper = space_from_name(_str("hyperspace", self.hyperspace))
        except ConfigError as exc:
            raise ConfigError(f"hyperspace (--hyperspace): {exc}") from None
        if not isinstance(self.space, str) or not self.space:
            raise ConfigError("space (--space) is required: a candidate space string like "
                              f"{hyper.encode(hyper.homogeneous('mbv2'))}, or --from-search RUN_DIR")
        try:
            hyper.decode(self.space)
        except GenomeError as exc:
            raise GenomeError(f"space (--space): {exc}") from None
        for name, low in (("epochs", 0), ("qat_epochs", 0), ("workers", 1), ("batch_size", 2),
                          ("bn_batches", 1)):
            _int(name, getattr(self, name), low)
        if self.epochs + self.qat_epochs < 1:
            raise ConfigError("epochs + qat_epochs (--epochs, --qat-epochs) must be >= 1; train at least one "
                              "epoch")
        for name in ("lr", "qat_lr"):
            _set(self, name, _num(name, getattr(self, name), 0))
        _str("device", self.device, choices=SUPERNET_DEVICES)
        _int("seed", self.seed, 0)
        _int("n_random", self.n_random, 0)
        _set(self, "kd_temperature", _num("kd_temperature", self.kd_temperature, 0))
        SupernetTrainSettings(n_random=self.n_random, kd_temperature=self.kd_temperature, seed=self.seed)

    def result_fields(self) -> dict:
        """The fields a resumed run must keep (``epochs`` and ``qat_epochs`` may grow; §5 resume)."""
        skip = {"epochs", "qat_epochs", "workers", "device"}
        return {k: v for k, v in self.to_config().items() if k not in skip}

    def check(self) -> "SupernetSettings":
        """Load the data set once on the driver, before Ray starts; refuse CUDA where there is none."""
        import torch

        from nasq.data import load_dataset

        splits = load_dataset(self.dataset, data_root=self.data_root, seed=self.data_seed, limit=self.data_limit)
        from nasq.spaces.spaceevo import space_from_name

        classes = space_from_name(self.hyperspace).hyperspace.classes
        if splits.num_classes > classes:
            raise DataError(f"data set {self.dataset} has {splits.num_classes} classes, the hyperspace's head "
                            f"{classes}; use a data set of at most {classes} classes")
        n = len(splits.train)
        if n < self.workers:
            raise ConfigError(f"{n} training examples cannot be split over {self.workers} workers; use "
                              "fewer --workers or more data")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda but torch sees no CUDA device here; use --device auto or cpu")
        return self


@dataclass(frozen=True)
class SubnetSearchSettings(ExperimentSettings):
    """Latency-constrained search of a trained supernet's subnets (``nasq search subnet``; SpaceEvo §5)."""

    EXPERIMENT: ClassVar[str] = "subnet"
    DERIVED: ClassVar[tuple[str, ...]] = ("hyperspace", "space", "checkpoint", "predictor_version")

    supernet: str | None = None  # run directory of `nasq supernet train` (its latest checkpoint is searched)
    predictor: str | None = None  # INT8 latency predictor of `nasq latency build --hyperspace` (this CPU)
    max_latency_ms: float | None = None  # the predicted INT8 latency limit of this search
    constraint_draws: int = 10  # feasible new subnets drawn per proposal, the slowest proposed (1: the first)
    bn_batches: int | None = None  # training batches recalibrating BatchNorm per subnet (None: the supernet's)
    device: str = "cpu"  # torch device of a trial: cpu | cuda | auto
    cpus_per_trial: float = 1.0  # CPUs Ray reserves for a trial (also its torch threads)
    hyperspace: str | None = None  # the supernet's hyperspace (filled in before the search)
    space: str | None = None  # the supernet's candidate space (filled in before the search)
    checkpoint: str | None = None  # the supernet checkpoint every trial loads (filled in before the search)
    predictor_version: str | None = None  # content hash of the predictor (filled in before the search)

    def __post_init__(self) -> None:
        for name in ("supernet", "predictor", "checkpoint"):
            if getattr(self, name) is not None:
                _set(self, name, _path(_str(name, getattr(self, name))))
        if self.max_latency_ms is not None:
            _set(self, "max_latency_ms", _num("max_latency_ms", self.max_latency_ms, 0))
        _int("constraint_draws", self.constraint_draws, 1)
        _int("bn_batches", self.bn_batches, 1, optional=True)
        _str("device", self.device, choices=SUPERNET_DEVICES)
        _set(self, "cpus_per_trial", _num("cpus_per_trial", self.cpus_per_trial, 0))
        for name in ("hyperspace", "space", "predictor_version"):
            _str(name, getattr(self, name), optional=True)

    @property
    def threads(self) -> int:
        """Torch threads of one trial: its CPUs, at least one."""
        return max(1, int(self.cpus_per_trial))

    def check(self) -> "SubnetSearchSettings":
        """Read the supernet run and the predictor once before Ray; refuse a limit no subnet meets (§5).

        Fills in the supernet's hyperspace, space and latest checkpoint and the predictor's version.
        """
        from nasq.errors import CheckpointError
        from nasq.latency.predictor import LatencyPredictor
        from nasq.spaces.spaceevo import space_from_name
        from nasq.supernet.run import load_latest, latest_checkpoint

        if not self.supernet:
            raise ConfigError("nasq search subnet needs the supernet run directory (`nasq supernet train`)")
        if not self.predictor:
            raise ConfigError("--predictor FILE is required: the INT8 latency predictor of "
                              "`nasq latency build --hyperspace NAME` on this CPU")
        if self.max_latency_ms is None:
            raise ConfigError("--constraints-ms is required: predicted INT8 latency limits in ms like 5,10")
        sup, state = load_latest(self.supernet)
        if state["phase"] != "qat":
            raise CheckpointError(f"supernet {self.supernet} has no LSQ+ epoch yet (phase {state['phase']}); "
                                  "train it with --qat-epochs >= 1 (nasq resume continues it)")
        pred = LatencyPredictor.load(self.predictor)  # refuses a file measured on another CPU
        built = pred.meta.get("hyperspace", pred.meta.get("space"))
        try:
            same = isinstance(built, str) and space_from_name(built).hyperspace == \
                space_from_name(sup.hyperspace).hyperspace
        except ConfigError:
            same = False
        if not same:
            raise ConfigError(f"predictor {self.predictor} was built for {built or 'an unrecorded block set'}, "
                              f"the supernet for hyperspace {sup.hyperspace}; build one with `nasq latency "
                              f"build --hyperspace {sup.hyperspace}`")
        cand = space_from_name(sup.hyperspace).candidate(sup.space)
        low = pred.predict_model(cand.blocks(cand.smallest()))
        if low > self.max_latency_ms:
            raise ConfigError(f"no subnet meets {self.max_latency_ms:g} ms: the smallest is predicted at "
                              f"{low:.3f} ms; raise --constraints-ms above it")
        return dataclasses.replace(self, hyperspace=sup.hyperspace, space=sup.space,
                                   checkpoint=self.checkpoint or str(latest_checkpoint(self.supernet)),
                                   predictor_version=pred.version)


@dataclass(frozen=True)
class PipelineSettings(ExperimentSettings):
    """The phases after the space search in ``nasq pipeline spaceevo`` (SpaceEvo §5): the supernet of the
    best space, the subnet search per limit and the INT8 export of each limit's best subnet; the phases
    before are the chain's (:class:`SpaceEvoSettings`)."""

    EXPERIMENT: ClassVar[str] = "pipeline"

    supernet_epochs: int = SupernetSettings.epochs  # fp32 sandwich-rule epochs of the supernet
    supernet_qat_epochs: int = SupernetSettings.qat_epochs  # LSQ+ epochs of the supernet
    supernet_workers: int = SupernetSettings.workers  # Ray Train workers of the supernet training
    supernet_batch_size: int = SupernetSettings.batch_size  # examples per step and worker
    supernet_lr: float = SupernetSettings.lr  # SGD learning rate of the fp32 epochs
    supernet_qat_lr: float = SupernetSettings.qat_lr  # SGD learning rate of the LSQ+ epochs
    supernet_device: str = SupernetSettings.device  # auto | cpu | cuda
    subnet_samples: int = 100  # subnets evaluated per latency limit
    subnet_population: int = 20  # aging evolution population P of the subnet search
    subnet_sample_size: int = 5  # tournament sample S of the subnet search
    subnet_constraint_draws: int = SubnetSearchSettings.constraint_draws  # feasible draws per proposal
    export_format: str = "both"  # INT8 files of every limit's best subnet: onnx | tflite | both
    export_repeats: int = 50  # timed runs per exported file

    def __post_init__(self) -> None:
        _str("export_format", self.export_format, choices=("onnx", "tflite", "both"))
        _int("export_repeats", self.export_repeats, 1)
        for name in ("subnet_samples", "subnet_population", "subnet_sample_size", "subnet_constraint_draws"):
            _int(name, getattr(self, name), 1)
        if self.subnet_sample_size > self.subnet_population:
            raise _fail("subnet_sample_size", self.subnet_sample_size,
                        f"at most --subnet-population ({self.subnet_population})")
        self.supernet_settings("mbv1:16-24|mbv1:24-32|mbv1:32-40", "spaceevo-tiny", "digits", None, 0, None)

    def supernet_settings(self, space: str, hyperspace: str, dataset: str, data_root: str | None,
                          data_seed: int, data_limit: int | None) -> SupernetSettings:
        """The supernet training of the found space (``supernet_*`` fields; the chain's data)."""
        try:
            return SupernetSettings(space=space, hyperspace=hyperspace, dataset=dataset, data_root=data_root,
                                    data_seed=data_seed, data_limit=data_limit, epochs=self.supernet_epochs,
                                    qat_epochs=self.supernet_qat_epochs, workers=self.supernet_workers,
                                    batch_size=self.supernet_batch_size, lr=self.supernet_lr,
                                    qat_lr=self.supernet_qat_lr, device=self.supernet_device)
        except ConfigError as exc:  # name the pipeline's flag, not the supernet's
            raise ConfigError(re.sub(r"\(--([a-z-]+)\)", r"(--supernet-\1)", str(exc))) from None


EXPERIMENT_SETTINGS: dict[str, type[ExperimentSettings]] = {
    cls.EXPERIMENT: cls for cls in (NB201Settings, JasqSettings, QuantPolicySettings, SpaceEvoSettings,
                                     SubnetSearchSettings)}


def settings_class(experiment: str) -> type[ExperimentSettings] | None:
    """The typed settings class of an experiment (None for experiments without one); imports no Ray."""
    if experiment in EXPERIMENT_SETTINGS:
        return EXPERIMENT_SETTINGS[experiment]
    import sys

    registry = sys.modules.get("nasq.experiments")
    exp = registry.registered(experiment) if registry is not None else None
    return getattr(exp, "settings_class", None)


# -- the search ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSettings:
    """Resolved settings of one search; written to ``RUN_DIR/nasq-run.json`` (itself a valid ``--config``).

    ``experiment_config`` may be given as the experiment's settings dataclass or as a dict; it is
    stored as the validated dict every trial receives (plus ``genome``).
    """

    experiment: str  # registered experiment name ("nb201", "jasq", "quant-policy", ...)
    experiment_config: Any = field(default_factory=dict)  # the experiment's settings (dataclass or dict)
    searcher: str = "tournament"  # tournament | aging | random
    population_size: int = 16  # P, the population size
    sample_size: int = 16  # S, the tournament sample size
    children_per_parent: int = 1  # aging only: 1, or 2 for SpaceEvo's two children
    samples: int = 64  # number of trials (evaluated genomes)
    concurrency: int = 2  # trials running at once (ConcurrencyLimiter)
    seed: int | None = 0  # searcher seed
    storage: str = "runs"  # parent folder of run directories
    name: str | None = None  # run directory name (default: experiment-searcher-time)
    address: str | None = None  # Ray cluster to join (None: start a local Ray)
    points_to_evaluate: tuple[str, ...] = ()  # genomes evaluated first

    def __post_init__(self) -> None:
        _str("experiment", self.experiment)
        cfg = self.experiment_config
        cls = settings_class(self.experiment)
        if isinstance(cfg, ExperimentSettings):
            if type(cfg).EXPERIMENT != self.experiment:
                raise ConfigError(f"experiment {self.experiment!r} got {type(cfg).__name__}; pass "
                                  f"{cls.__name__ if cls else 'a dict'}")
            cfg = cfg.to_config()
        elif cls is not None:
            cfg = cls.from_dict(cfg, "experiment_config").to_config()
        elif not isinstance(cfg, Mapping):
            raise _fail("experiment_config", cfg, "a mapping")
        _set(self, "experiment_config", dict(cfg))
        _str("searcher", self.searcher)
        for name in ("population_size", "sample_size", "children_per_parent", "samples", "concurrency"):
            _int(name, getattr(self, name), 1)
        _int("seed", self.seed, 0, optional=True)
        _str("storage", self.storage)
        if self.name is not None:
            _str("name", self.name)
            if self.name in (".", "..") or "/" in self.name or os.sep in self.name:
                raise _fail("name", self.name, "a folder name (no '/'; the parent folder is --storage)")
        _str("address", self.address, optional=True)
        points = self.points_to_evaluate
        if isinstance(points, str) or not isinstance(points, (list, tuple)) or \
                not all(isinstance(p, str) for p in points):
            raise _fail("points_to_evaluate", points, "a list of genome strings")
        _set(self, "points_to_evaluate", tuple(points))

    def __getstate__(self) -> dict:
        """Pickle the fields only (not the cached experiment, whose factories may not pickle)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @functools.cached_property
    def options(self) -> ExperimentSettings | dict:
        """The typed experiment settings (the plain dict for experiments without a settings class)."""
        cls = settings_class(self.experiment)
        return cls.from_dict(self.experiment_config) if cls else dict(self.experiment_config)

    @functools.cached_property
    def exp(self) -> "Experiment":
        """The registered experiment (looked up once)."""
        from nasq import experiments

        return experiments.get(self.experiment)

    def replace(self, **changes: Any) -> "SearchSettings":
        """A copy with ``changes``; ``experiment_config`` entries may be given as keyword ``options``."""
        options = changes.pop("options", None)
        if options:
            changes["experiment_config"] = {**self.experiment_config, **_jsonable_map(options)}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The JSON-able form (the run file's ``settings``)."""
        out = dataclasses.asdict(self)
        out["points_to_evaluate"] = list(self.points_to_evaluate)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object = "settings") -> "SearchSettings":
        """Build from a mapping of field names (a config file or a run file); unknown keys are refused."""
        if not isinstance(data, Mapping) or "experiment" not in data:
            raise ConfigError(f"{source}: settings need an 'experiment' entry (a mapping of setting names)")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{source}: unknown search setting(s) {unknown}; known: {names}")
        return cls(**{k: _plain(v) if k == "points_to_evaluate" else v for k, v in data.items()})


def _jsonable_map(options: Mapping[str, Any]) -> dict:
    return {k: _jsonable(v) for k, v in options.items()}


SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchSettings) if f.name not in
                      ("experiment", "experiment_config"))


def load_config(path: str | Path) -> dict:
    """Read a ``--config`` file: YAML (``yaml.safe_load``; JSON is YAML too) holding search settings.

    The file is either a run file (``RUN_DIR/nasq-run.json``: its ``settings`` are used) or a mapping
    of :class:`SearchSettings` field names, with the experiment's fields under ``experiment_config``.

    Returns:
        The settings mapping (not yet validated; :meth:`SearchSettings.from_dict` does that).
    """
    import yaml

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "nasq-run.json"
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path} ({exc.strerror or exc}); check the path") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path} is not valid YAML ({type(exc).__name__}); fix the file") from exc
    if isinstance(doc, Mapping) and "format" in doc:
        if doc.get("format") != "nasq.run":
            raise ConfigError(f"--config {path} is not a nasq run file or settings mapping")
        doc = _reusable_run_settings(doc.get("settings"))
    if not isinstance(doc, Mapping):
        raise ConfigError(f"--config {path} must hold a mapping of settings (searcher: aging, ...)")
    return dict(doc)


def _reusable_run_settings(settings: Any) -> Any:
    """A run's resolved settings as the ``--config`` of a new run: without the run's name (a new one is
    made) and without the fields the runner derived for that run (its actor names, weight files)."""
    if not isinstance(settings, Mapping):
        return settings
    doc = {k: v for k, v in settings.items() if k != "name"}
    cls = EXPERIMENT_SETTINGS.get(doc.get("experiment"))
    cfg = doc.get("experiment_config")
    if cls is not None and isinstance(cfg, Mapping):
        doc["experiment_config"] = {k: v for k, v in cfg.items() if k not in cls.DERIVED}
    return doc


__all__ = ["CONSTRAINT_MODES", "EXPERIMENT_SETTINGS", "ExperimentSettings", "JasqSettings", "LutSettings",
           "NB201Settings", "QuantPolicySettings", "SEARCH_FIELDS", "SpaceEvoSettings", "SearchSettings",
           "field_help", "flag", "load_config", "settings_class"]
