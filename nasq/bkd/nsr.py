"""Noise-to-signal-power ratio loss of block-wise distillation (SpaceEvo §4.5, after DNA/DONNA).

A student stage is trained to reproduce the teacher's feature map of the same stage; its error is the
power of the difference relative to the power of the teacher's signal, so stages with large or small
activations are comparable and the per-stage losses of a model can be summed (§4.5: model loss = sum of
stage losses). An NSR of 1 is what a student outputting zeros gets.
"""

from __future__ import annotations

import torch

from nasq.errors import ConfigError

EPS = 1e-12  # floor of a sample's teacher power (an all-zero teacher map)


def nsr_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """NSR = ‖s − t‖² / ‖t‖² per sample, averaged over the batch (SpaceEvo §4.5).

    Each sample's norms run over all its non-batch dimensions (C×H×W); the ratio is formed per sample,
    then the batch mean is taken, so one high-energy image does not dominate the batch.

    Args:
        student: (B, ...) student features.
        teacher: (B, ...) teacher features, same shape; treated as a target (its gradient is not needed
            and none flows into it).
        eps: floor of ‖t‖² per sample.

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: the shapes differ or there is no batch dimension.
    """
    if student.shape != teacher.shape or student.dim() < 1 or student.shape[0] == 0:
        raise ConfigError(f"NSR loss needs student and teacher of the same (B, ...) shape with B >= 1, got "
                          f"{tuple(student.shape)} and {tuple(teacher.shape)}; fix the adapter widths")
    teacher = teacher.detach()
    s = student.reshape(student.shape[0], -1)
    t = teacher.reshape(teacher.shape[0], -1).to(s.dtype)
    noise = (s - t).pow(2).sum(dim=1)
    signal = t.pow(2).sum(dim=1).clamp_min(eps)
    return (noise / signal).mean()
