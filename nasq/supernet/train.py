"""Sandwich-rule training of the supernet with inplace distillation (SpaceEvo §5; BigNAS §3.1, OFA).

Plain PyTorch, no Ray. One step (:func:`sandwich_step`) trains, on the same minibatch,

- the **largest** subnet on the labels (cross-entropy),
- the **smallest** and ``n_random`` **random** subnets on the largest's detached soft predictions
  (inplace distillation: KL divergence at temperature T, scaled by T², :func:`kd_loss`),

accumulating the gradients of every member and taking one optimizer step. The subnets a step draws are
a function of ``(seed, step)`` only (:func:`step_rng`), so every data-parallel worker trains the same
subnets without talking to the others.

Phase 2 (quantization-aware, SpaceEvo §5 "quantized-for-all"): :func:`enable_qat` turns every LSQ+
quantizer on and initialises them from one batch of the largest subnet (as :mod:`nasq.bkd.train`
does), then the same steps train weights and quantizer scales together. :func:`evaluate` measures a
subnet's accuracy in whichever mode the quantizers are in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasq.errors import ConfigError
from nasq.quant.lsq import set_quant
from nasq.spaces.spaceevo_subnet import CandidateSpace, SubnetGenome
from nasq.supernet.bn import recalibrate_bn
from nasq.supernet.model import Supernet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupernetTrainSettings:
    """Knobs of one sandwich-rule epoch (SpaceEvo §5, BigNAS §3.1)."""

    n_random: int = 2  # random subnets per step beside the largest and the smallest
    kd_temperature: float = 1.0  # softmax temperature of inplace distillation (the KD loss is scaled by T^2)
    seed: int = 0  # subnet draws: global step t draws with np.random.default_rng([seed, t])
    grad_clip: float | None = 5.0  # clip the global gradient norm before each step (None: no clipping)

    def __post_init__(self) -> None:
        if isinstance(self.n_random, bool) or not isinstance(self.n_random, int) or self.n_random < 0:
            raise ConfigError(f"n_random must be an integer >= 0, got {self.n_random!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("kd_temperature", "grad_clip"):
            v = getattr(self, name)
            if name == "grad_clip" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")


def _net(model: nn.Module) -> Supernet:
    """The supernet inside ``model`` (itself, or the ``module`` of a DistributedDataParallel wrapper)."""
    net = getattr(model, "module", model)
    if not isinstance(net, Supernet):
        raise ConfigError(f"expected a Supernet (or a wrapper of one), got {type(net).__name__}")
    return net


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of global step ``step``: equal on every worker, different for every step."""
    return np.random.default_rng([int(seed), int(step)])


def sandwich_subnets(space: CandidateSpace, rng: np.random.Generator,
                     n_random: int = 2) -> list[tuple[str, SubnetGenome]]:
    """The members of one sandwich step: ``largest``, ``smallest``, ``random_0`` … (BigNAS §3.1)."""
    members = [("largest", space.largest()), ("smallest", space.smallest())]
    if n_random:
        batch = space.sample_subnets(n_random, rng)
        members += [(f"random_{r}", space.genome(batch, r)) for r in range(n_random)]
    return members


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Inplace-distillation loss KL(softmax(t/T) ‖ softmax(s/T)) · T², batch mean (BigNAS §3.1)."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher.detach() / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


def sandwich_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                  rng: np.random.Generator | int | Sequence[int], n_random: int = 2,
                  kd_temperature: float = 1.0, grad_clip: float | None = None) -> dict[str, float]:
    """One sandwich-rule step with inplace distillation (SpaceEvo §5, BigNAS §3.1).

    Args:
        model: a :class:`Supernet` (or a DDP wrapper of one); left in train mode, its active subnet
            restored afterwards.
        x, y: one minibatch (on the model's device).
        optimizer: stepped once, on the gradients of all members summed.
        rng: the step's generator, or a seed / ``[seed, step]`` for ``np.random.default_rng``
            (:func:`step_rng`).
        n_random: random subnets beside the largest and the smallest.
        kd_temperature: softmax temperature of the distillation targets.
        grad_clip: clip the global gradient norm to this before the step (``None``: off).

    Returns:
        Each member's loss (``largest``: cross-entropy; the others: :func:`kd_loss`).
    """
    net = _net(model)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    members = sandwich_subnets(net.space, rng, n_random)
    previous = net.active
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses, teacher = {}, None
    for name, subnet in members:
        net.set_active(subnet)
        logits = model(x)
        if teacher is None:  # the largest comes first: labels, then its predictions teach the others
            loss = F.cross_entropy(logits, y)
            teacher = logits.detach()
        else:
            loss = kd_loss(logits, teacher, kd_temperature)
        loss.backward()
        losses[name] = float(loss.detach())
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    net.set_active(previous)
    return losses


@torch.no_grad()
def enable_qat(model: nn.Module, x: torch.Tensor) -> None:
    """Start the LSQ+ phase (SpaceEvo §5): quantizers on, initialised from ``x`` through the largest.

    Weight scales come from the full weights, activation ranges from this batch (LSQ+ rules of
    :mod:`nasq.quant.lsq`); the forward runs in train mode, as :mod:`nasq.bkd.train` does.
    """
    net = _net(model)
    previous, was_training = net.active, model.training
    set_quant(model, True)
    net.set_active(net.largest())
    model.train()
    model(x.to(_device(model)))
    net.set_active(previous)
    model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, subnet: SubnetGenome | str, loader: Iterable,
             calib: Iterable | None = None, bn_batches: int = 0) -> float:
    """Top-1 accuracy of ``subnet`` on ``loader`` (batches of ``(x, y)``), in eval mode (SpaceEvo §5).

    Fp32 or fake INT8 as the quantizers currently are. With ``bn_batches > 0`` BatchNorm is first
    recalibrated for the subnet on that many batches of ``calib`` (:func:`recalibrate_bn`; the new
    statistics stay). The previously active subnet and the train/eval mode are restored.

    Raises:
        ConfigError: ``loader`` yields no examples, or ``bn_batches > 0`` without ``calib``.
    """
    net = _net(model)
    previous, was_training = net.active, model.training
    net.set_active(subnet)
    device = _device(model)
    try:
        if bn_batches > 0:
            if calib is None:
                raise ConfigError("evaluate: bn_batches > 0 needs calib batches to recalibrate BatchNorm on")
            recalibrate_bn(model, calib, bn_batches)
        model.eval()
        correct = total = 0
        for x, y in loader:
            pred = model(x.to(device)).argmax(1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    finally:
        net.set_active(previous)
        model.train(was_training)
    if total == 0:
        raise ConfigError("evaluate got an empty loader; pass at least one (x, y) batch")
    return correct / total


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                settings: SupernetTrainSettings, step: int = 0,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> dict[str, float]:
    """One epoch of :func:`sandwich_step` over ``loader`` (SpaceEvo §5).

    Args:
        model: the supernet (quantizers on for the QAT phase: :func:`enable_qat`).
        loader: batches of ``(x, y)``, moved to the model's device.
        optimizer: the optimizer.
        settings: subnets per step, temperature, seed, clipping.
        step: the global step of the first batch (e.g. ``epoch * len(loader)``), so draws never repeat.
        scheduler: stepped after every optimizer step when given.

    Returns:
        The mean loss of each member over the epoch (``largest``, ``smallest``, ``random_0`` …).

    Raises:
        ConfigError: ``loader`` yields no batch.
    """
    device = _device(model)
    sums: dict[str, float] = {}
    n = 0
    for x, y in loader:
        rng = step_rng(settings.seed, step + n)
        losses = sandwich_step(model, x.to(device), y.to(device), optimizer, rng, settings.n_random,
                               settings.kd_temperature, settings.grad_clip)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        if scheduler is not None:
            scheduler.step()
    if n == 0:
        raise ConfigError("train_epoch got an empty loader; pass at least one (x, y) batch")
    log.debug("epoch from step %d: %d steps, largest loss %.4f", step, n, sums["largest"] / n)
    return {k: v / n for k, v in sums.items()}
