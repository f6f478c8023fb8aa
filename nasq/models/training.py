"""Training, evaluation and quantized evaluation of JASQ networks (JASQ §3.4, §4).

Plain PyTorch, no Ray: the JASQ trainable, ``nasq train`` and the benchmarks share these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nasq.models.nasnet import BitRule, NetConfig, bits_for_parameters
from nasq.quant.size import SizeReport, quantize_with_size
from nasq.spaces.jasq import JasqGenome


@dataclass(frozen=True)
class TrainSettings:
    """SGD settings of a short training run."""

    steps: int = 50  # optimizer steps (minibatches)
    batch_size: int = 64  # examples per step
    lr: float = 0.05  # SGD learning rate (cosine-annealed to 0 over ``steps``)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 3e-4  # L2 penalty
    grad_clip: float = 5.0  # max gradient norm
    seed: int = 0  # minibatch order


def train_steps(net: nn.Module, data: TensorDataset, settings: TrainSettings) -> float:
    """Train ``net`` for ``settings.steps`` SGD steps on random minibatches; return the mean loss."""
    x, y = data.tensors
    if settings.steps <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(int(settings.seed))
    opt = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.steps)
    net.train()
    total = 0.0
    for _ in range(settings.steps):
        idx = torch.randint(len(y), (min(settings.batch_size, len(y)),), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
        opt.step()
        sched.step()
        total += float(loss.detach())
    return total / settings.steps


@torch.no_grad()
def evaluate(net: nn.Module, data: TensorDataset, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``net`` on ``data`` (evaluation mode), as every nasq report gives it."""
    x, y = data.tensors
    net.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / max(1, len(y))


@torch.no_grad()
def recalibrate_bn(net: nn.Module, data: TensorDataset, batches: int = 8, batch_size: int = 64,
                   seed: int = 0) -> nn.Module:
    """Reset every BN's running statistics and re-estimate them on ``batches`` training minibatches.

    Forward passes in train mode without gradients over ``batches * batch_size`` distinct
    examples (all of them if fewer), averaged over the batches (momentum None):
    the per-genome BN recalibration of single-path supernets (SPOS §3.3). Parameters do not
    change. ``net`` must keep running statistics (see :func:`nasq.models.nasnet.with_running_stats`).
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if any(not m.track_running_stats for m in bns):
        raise ValueError("recalibrate_bn needs BN with running statistics; wrap a weight-shared network "
                         "with nasq.models.nasnet.with_running_stats first")
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    x, _ = data.tensors
    gen = torch.Generator().manual_seed(int(seed))
    n = min(len(x), max(1, batches) * batch_size)  # distinct examples, in a seeded order
    order = torch.randperm(len(x), generator=gen)[:n]
    net.train()
    for i in range(0, n, batch_size):
        net(x[order[i:i + batch_size]])
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    net.eval()
    return net


def state_bits(net: nn.Module, genome: JasqGenome, config: NetConfig, rule: BitRule) -> dict[str, int]:
    """Bits of every entry of ``net.state_dict()``: parameters per :func:`bits_for_parameters`,
    floating buffers (BN running statistics) per ``rule.batchnorm``; integer buffers stay raw."""
    bits = bits_for_parameters(genome, config, rule)
    return {name: bits.get(name, rule.batchnorm) for name in net.state_dict()}


def quantize_network(net: nn.Module, genome: JasqGenome, config: NetConfig, rule: BitRule = BitRule(),
                     bucket_size: int = 256) -> SizeReport:
    """Replace ``net``'s weights by their bucket-quantized values (JASQ §3.4); return the sizes.

    Every weight of cell ``p`` uses the genome's ``bits[p]``; the rest follows ``rule``.
    """
    state = net.state_dict()
    bits = state_bits(net, genome, config, rule)
    deq, report = quantize_with_size([(k, v.detach(), bits[k]) for k, v in state.items()], bucket_size)
    net.load_state_dict({k: deq[k].to(state[k].dtype) for k in state})
    return report


def train_standalone(genome: JasqGenome, config: NetConfig, train: TensorDataset, settings: TrainSettings,
                     seed: int = 0) -> nn.Module:
    """Train a fresh one-genome network (BN with running statistics) from scratch (JASQ §4)."""
    from nasq.models.nasnet import build_network

    torch.manual_seed(seed)
    net = build_network(genome, config, shared=False)
    train_steps(net, train, settings)
    return net


def epochs_to_steps(epochs: float, num_train: int, batch_size: int) -> int:
    """Number of SGD steps in ``epochs`` passes over ``num_train`` examples."""
    return max(1, int(round(epochs * -(-num_train // batch_size))))
