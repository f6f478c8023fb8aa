"""Quant-policy trainable: evaluate one bit policy of a trained network (JASQ §4.1).

Registers the ``quant-policy`` experiment (metric ``fitness``, mode ``max``). Experiment config keys:

- ``model``: a torchvision name (see :mod:`nasq.models.torchvision_nets`); ``num_layers``: its number
  of quantizable layers (filled in by the CLI; computed when absent); ``bit_choices`` (default 4, 8, 16).
- ``checkpoint``: absolute path of the trained float state dict (``torch.load(weights_only=True)``).
- ``dataset``, ``data_root``, ``data_seed``, ``limit``: the data set (see :func:`nasq.data.load_dataset`);
  the policy is scored on the **validation** split.
- ``bucket_size`` (256), ``target_size_mb`` (None: fitness = accuracy), ``gamma`` (-0.2): Eq. 1.
- ``cpus_per_trial`` (1): CPUs reserved per trial and torch threads used.

A trial reports ``val_acc`` (percent), ``size_mb`` (Huffman-coded file size), ``size_mb_fixed``,
``size_mb_float``, ``compression_ratio``, ``mean_bits`` and ``fitness`` (Eq. 1).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
from ray import tune

from nasq.data import Splits, load_dataset
from nasq.experiments import Experiment, register
from nasq.fitness import DEFAULT_GAMMA, check_target, jasq_fitness
from nasq.models.torchvision_nets import (
    bits_for_layers,
    build_torchvision,
    load_state_dict,
    quantizable_layers,
)
from nasq.quant.policy import evaluate_policy
from nasq.spaces.quant_policy import DEFAULT_CHOICES, QuantPolicySpace

METRIC = "fitness"


@lru_cache(maxsize=2)
def _splits(dataset: str, data_root: str | None, seed: int, limit: int | None) -> Splits:
    return load_dataset(dataset, data_root=data_root, seed=seed, limit=limit)


def splits_of(cfg: dict) -> Splits:
    """The (process-cached) data splits named by an experiment config."""
    limit = cfg.get("limit")
    return _splits(
        str(cfg.get("dataset", "digits")),
        cfg.get("data_root"),
        int(cfg.get("data_seed", 0)),
        int(limit) if limit is not None else None,
    )


@lru_cache(maxsize=2)
def _network(model: str, num_classes: int, input_shape: tuple, checkpoint: str) -> torch.nn.Module:
    net = build_torchvision(model, num_classes, input_shape)
    return load_state_dict(net, checkpoint).eval()


def network_of(cfg: dict, splits: Splits) -> torch.nn.Module:
    """The trained float network of an experiment config (process-cached; do not modify it)."""
    return _network(str(cfg["model"]), splits.num_classes, tuple(splits.input_shape), str(cfg["checkpoint"]))


def make_space(cfg: dict) -> QuantPolicySpace:
    """The bit-policy space of the config's model: one width per quantizable layer."""
    n = cfg.get("num_layers")
    if n is None:
        n = len(quantizable_layers(build_torchvision(str(cfg["model"]), 10, (3, 32, 32))))
    return QuantPolicySpace(int(n), tuple(cfg.get("bit_choices") or DEFAULT_CHOICES))


def score(cfg: dict, genome: str) -> dict:
    """Evaluate one bit policy on the validation split and compute its Eq. 1 fitness (JASQ §4.1)."""
    splits = splits_of(cfg)
    net = network_of(cfg, splits)
    policy = make_space(cfg).decode(genome)
    bits = bits_for_layers(net, policy.bits)
    res = evaluate_policy(net, net.state_dict(), bits, splits.val, int(cfg.get("bucket_size", 256)))
    out = {"val_acc": res.pop("acc"), **res, "mean_bits": _mean_bits(net, bits)}
    ts = cfg.get("target_size_mb")
    gamma = float(cfg.get("gamma", DEFAULT_GAMMA))
    out["fitness"] = (
        out["val_acc"] if ts is None else jasq_fitness(out["val_acc"], out["size_mb"], float(ts), gamma)
    )
    return out


def _mean_bits(net: torch.nn.Module, bits: dict[str, int]) -> float:
    state = net.state_dict()
    n = sum(state[k].numel() for k in bits)
    return sum(state[k].numel() * b for k, b in bits.items()) / max(n, 1)


def quant_policy_trainable(config: dict) -> None:
    """Tune function trainable: quantize the trained network with ``config["genome"]`` and report."""
    torch.set_num_threads(max(1, int(config.get("cpus_per_trial", 1))))
    tune.report(score(config, config["genome"]))


def make_trainable(cfg: dict) -> Callable[[dict], None]:
    """The trainable of the experiment (validates Eq. 1's settings first)."""
    if cfg.get("target_size_mb") is not None:
        check_target(float(cfg["target_size_mb"]), float(cfg.get("gamma", DEFAULT_GAMMA)))
    return quant_policy_trainable


def resources(cfg: dict) -> dict:
    """Resources of one trial: ``cpus_per_trial`` CPUs (default 1)."""
    return {"cpu": float(cfg.get("cpus_per_trial", 1))}


register(
    Experiment(
        name="quant-policy",
        make_space=make_space,
        make_trainable=make_trainable,
        metric=METRIC,
        mode="max",
        resources=resources,
    )
)
