"""Quant-policy trainable: evaluate one bit policy of a trained network (JASQ §4.1).

Registers the ``quant-policy`` experiment (metric ``fitness``, mode ``max``). The experiment config is
:class:`nasq.settings.QuantPolicySettings` in dict form, read back with ``from_config``. The float
weights are prepared on the driver by the experiment's ``prepare`` hook (``--checkpoint``, torchvision
``--weights`` and/or ``--train-epochs``; a trained network is saved as ``RUN_DIR/float_state_dict.pt``)
and every trial reads them from ``weights_file``. The ``finish`` hook writes the Pareto front (the
writer JASQ uses: ``pareto.csv``, ``pareto.png``, ``best_genomes.json``) and the JASQ Table 1 style
report ``quant_policy_report.{csv,md}``, after a search, a resume and ``nasq report`` alike.

A trial reports ``val_acc`` (percent), ``size_mb`` (Huffman-coded file size), ``size_mb_fixed``,
``size_mb_float``, ``compression_ratio``, ``mean_bits`` and ``fitness`` (Eq. 1).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from ray import tune

from nasq.data import Splits, load_dataset
from nasq.experiments import Experiment, register
from nasq.fitness import jasq_fitness
from nasq.jasq_report import write_front_outputs
from nasq.models.torchvision_nets import (
    bits_for_layers,
    build_torchvision,
    load_state_dict,
    quantizable_layers,
)
from nasq.quant.policy import evaluate_policy, train_float
from nasq.settings import QuantPolicySettings, SearchSettings
from nasq.spaces.quant_policy import QuantPolicySpace

logger = logging.getLogger(__name__)

METRIC = "fitness"
CHECKPOINT_NAME = "float_state_dict.pt"


def settings_of(cfg: dict | QuantPolicySettings) -> QuantPolicySettings:
    """The typed settings of an experiment (or trial) config."""
    return cfg if isinstance(cfg, QuantPolicySettings) else QuantPolicySettings.from_config(cfg)


@lru_cache(maxsize=2)
def _splits(dataset: str, data_root: str | None, seed: int, limit: int | None) -> Splits:
    return load_dataset(dataset, data_root=data_root, seed=seed, limit=limit)


def splits_of(cfg: dict | QuantPolicySettings) -> Splits:
    """The (process-cached) data splits named by an experiment config."""
    s = settings_of(cfg)
    return _splits(s.dataset, s.data_root, s.data_seed, s.data_limit)


@lru_cache(maxsize=2)
def _network(model: str, num_classes: int, input_shape: tuple, checkpoint: str) -> torch.nn.Module:
    net = build_torchvision(model, num_classes, input_shape)
    return load_state_dict(net, checkpoint).eval()


def network_of(cfg: dict | QuantPolicySettings, splits: Splits) -> torch.nn.Module:
    """The trained float network of an experiment config (process-cached; do not modify it)."""
    s = settings_of(cfg)
    weights = str(s.weights_file or s.checkpoint)
    return _network(s.model, splits.num_classes, tuple(splits.input_shape), weights)


def make_space(cfg: dict | QuantPolicySettings) -> QuantPolicySpace:
    """The bit-policy space of the config's model: one width per quantizable layer."""
    s = settings_of(cfg)
    n = s.num_layers
    if n is None:
        n = len(quantizable_layers(build_torchvision(s.model, 10, (3, 32, 32))))
    return QuantPolicySpace(n, s.bits)


def score(cfg: dict, genome: str) -> dict:
    """Evaluate one bit policy on the validation split and compute its Eq. 1 fitness (JASQ §4.1)."""
    s = settings_of(cfg)
    splits = splits_of(s)
    net = network_of(s, splits)
    policy = make_space(s).decode(genome)
    bits = bits_for_layers(net, policy.bits)
    res = evaluate_policy(net, net.state_dict(), bits, splits.val, s.bucket_size)
    out = {"val_acc": res.pop("acc"), **res, "mean_bits": _mean_bits(net, bits)}
    ts = s.target_size_mb
    acc = out["val_acc"]
    out["fitness"] = acc if ts is None else jasq_fitness(acc, out["size_mb"], ts, s.gamma)
    return out


def _mean_bits(net: torch.nn.Module, bits: dict[str, int]) -> float:
    state = net.state_dict()
    n = sum(state[k].numel() for k in bits)
    return sum(state[k].numel() * b for k, b in bits.items()) / max(n, 1)


def quant_policy_trainable(config: dict) -> None:
    """Tune function trainable: quantize the trained network with ``config["genome"]`` and report."""
    torch.set_num_threads(settings_of(config).threads)
    tune.report(score(config, config["genome"]))


def make_trainable(cfg: dict) -> Callable[[dict], None]:
    """The trainable of the experiment (its actors' repr names trial, genome and score)."""
    from nasq.searchers.status import with_trial_repr

    return with_trial_repr(quant_policy_trainable, METRIC)


def resources(cfg: dict) -> dict:
    """Resources of one trial: ``cpus_per_trial`` CPUs (default 1)."""
    return {"cpu": settings_of(cfg).cpus_per_trial}


def float_network(s: QuantPolicySettings, splits: Splits, out_dir: Path) -> tuple[torch.nn.Module, Path]:
    """Build the network and get its float weights per the settings; return it and the state dict path."""
    net = build_torchvision(s.model, splits.num_classes, splits.input_shape, weights=s.weights)
    if s.checkpoint:
        return load_state_dict(net, s.checkpoint), Path(s.checkpoint)
    if s.weights and not s.train_epochs and splits.num_classes != 1000:
        logger.warning("the pretrained classifier was replaced for this data set and is untrained; "
                       "add --train-epochs E to fine-tune it")
    if s.train_epochs:
        logger.info("training %s for %g epochs on %s", s.model, s.train_epochs, s.dataset)
        stats = train_float(net, splits, s.train_epochs, lr=s.lr, batch_size=s.batch_size, seed=s.data_seed)
        logger.info("trained in %.1fs, final loss %.3f", stats["train_seconds"], stats["train_loss"])
    path = Path(out_dir) / CHECKPOINT_NAME
    torch.save(net.state_dict(), path)
    return net.eval(), path


def prepare(settings: SearchSettings, run_dir: Path, resumed: bool) -> SearchSettings:
    """Load or train the float weights the trials read (kept in the run directory); record their path."""
    s = settings.options
    if resumed and s.weights_file and Path(s.weights_file).is_file():
        return settings
    _, path = float_network(s, splits_of(s), Path(run_dir))
    return settings.replace(options={"weights_file": str(path)})


def finish(settings: SearchSettings, run_dir: Path, trials: pd.DataFrame) -> None:
    """Write the Pareto front and the policy report (found policies beside float and uniform widths)."""
    from nasq.quant.policy_report import baseline_rows, found_rows, write_policy_report

    s = settings.options
    write_front_outputs(run_dir, trials, title=f"{s.model} bit policies")
    done = trials.dropna(subset=["objective"]) if not trials.empty else trials
    if done.empty:
        return
    splits = splits_of(s)
    net = network_of(s, splits)
    rows = baseline_rows(net, splits, s.bucket_size)
    rows += found_rows(done, net, splits, s.bucket_size, s.report_top)
    write_policy_report(rows, run_dir, title=f"{s.model} on {s.dataset}")


register(
    Experiment(
        name="quant-policy",
        make_space=make_space,
        make_trainable=make_trainable,
        metric=METRIC,
        mode="max",
        resources=resources,
        prepare=prepare,
        finish=finish,
        settings_class=QuantPolicySettings,
    )
)
