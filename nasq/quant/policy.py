"""Bit policies for an existing trained network (JASQ §4.1): train float, quantize per layer, evaluate.

Plain functions used by the ``quant-policy`` trainable, the ``nasq search quant-policy`` command and
the benchmarks. Accuracies are in percent; sizes come from :mod:`nasq.quant.size`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nasq.data import Splits
from nasq.quant.size import SizeReport, quantize_with_size

log = logging.getLogger(__name__)


def train_float(
    net: nn.Module,
    splits: Splits,
    epochs: float,
    *,
    lr: float = 0.05,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Train ``net`` in float32 on the training split (SGD, Nesterov momentum, one-cycle schedule).

    This provides the trained full-precision weights that JASQ §4.1 starts its bit-policy search from.

    Args:
        epochs: passes over the training split (fractions allowed, e.g. 0.5).

    Returns:
        ``{"train_seconds", "train_loss", "steps"}``.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=g, drop_last=False)
    steps = max(1, int(math.ceil(epochs * len(loader))))
    net.to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss()
    start, done, loss_sum, seen = time.perf_counter(), 0, 0.0, 0
    while done < steps:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum, seen, done = loss_sum + loss.item() * len(y), seen + len(y), done + 1
            if done >= steps:
                break
    net.eval()
    log.info("trained %d steps, mean loss %.3f", steps, loss_sum / max(seen, 1))
    return {
        "train_seconds": time.perf_counter() - start,
        "train_loss": loss_sum / max(seen, 1),
        "steps": steps,
    }


@torch.no_grad()
def accuracy(net: nn.Module, data: TensorDataset, batch_size: int = 500, device: str = "cpu") -> float:
    """Top-1 accuracy of ``net`` on ``data`` in percent (eval mode)."""
    net.to(device).eval()
    x, y = data.tensors
    correct = 0
    for i in range(0, len(y), batch_size):
        pred = net(x[i : i + batch_size].to(device)).argmax(dim=1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return 100.0 * correct / max(len(y), 1)


def policy_items(
    state: Mapping[str, torch.Tensor], bits: Mapping[str, int]
) -> list[tuple[str, torch.Tensor, int]]:
    """``(name, tensor, bits)`` for every tensor of ``state``; tensors without a width stay float32."""
    return [(name, t, int(bits.get(name, 32))) for name, t in state.items()]


def quantized_copy(
    net: nn.Module, state: Mapping[str, torch.Tensor], bits: Mapping[str, int], bucket_size: int = 256
) -> tuple[nn.Module, SizeReport]:
    """A copy of ``net`` holding ``state`` quantize-dequantized with ``bits`` (JASQ §3.4), and its sizes."""
    weights, report = quantize_with_size(policy_items(state, bits), bucket_size)
    qnet = copy.deepcopy(net)
    qnet.load_state_dict({k: v.to(state[k].dtype) for k, v in weights.items()})
    return qnet.eval(), report


def evaluate_policy(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    bits: Mapping[str, int],
    data: TensorDataset,
    bucket_size: int = 256,
    device: str = "cpu",
) -> dict:
    """Accuracy (percent) and sizes of ``net`` with weights ``state`` under bit policy ``bits`` (§4.1)."""
    qnet, report = quantized_copy(net, state, bits, bucket_size)
    return {"acc": accuracy(qnet, data, device=device), **report.as_dict()}
