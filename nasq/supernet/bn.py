"""BatchNorm recalibration of a weight-shared subnet (Once-for-All §3.3, BigNAS; SpaceEvo §5 evaluation).

The running statistics a supernet accumulates during training mix every sampled subnet, so before a
subnet is evaluated they are re-estimated for it alone: reset, then a cumulative average over a few
training batches with the subnet active.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasq.errors import ConfigError


def _images(batch: object) -> torch.Tensor:
    """The input tensor of a batch: the tensor itself or the first element of an ``(x, y)`` pair."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise ConfigError("a calibration batch must be a tensor or an (x, y) pair, got "
                          f"{type(batch).__name__}")
    return batch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, n_batches: int) -> int:
    """Re-estimate every BatchNorm's running statistics on ``n_batches`` batches (Once-for-All).

    Every BN is reset and switched to a cumulative average (``momentum=None``); the model runs the
    batches in train mode without gradients (for a :class:`~nasq.supernet.model.Supernet`, with its
    active subnet); then each BN's momentum and the model's train/eval mode are restored.

    Args:
        model: any module whose forward takes the batch's input tensor.
        batches: a data loader or a list of tensors or ``(x, y)`` pairs; the first ``n_batches`` are used
            (moved to the model's device).
        n_batches: how many batches to average over (>= 1).

    Returns:
        The number of batches used (fewer than ``n_batches`` if ``batches`` ran out).

    Raises:
        ConfigError: ``n_batches`` < 1, or ``batches`` yields none.
    """
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        raise ConfigError(f"n_batches must be an integer >= 1, got {n_batches!r}")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    device = next(model.parameters()).device
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for batch in batches:
            if used == n_batches:
                break
            model(_images(batch).to(device))
            used += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    if used == 0:
        raise ConfigError("recalibrate_bn got no batches; pass a non-empty loader or list of batches")
    return used
