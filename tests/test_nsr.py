"""NSR loss of block-wise KD (SpaceEvo §4.5): ‖s − t‖² / ‖t‖² per sample, then the batch mean."""

from __future__ import annotations

import pytest
import torch

from nasq.bkd import nsr_loss
from nasq.errors import ConfigError


def test_known_values_by_hand():
    # sample 0: s - t = (0, 1), ‖·‖² = 1, ‖t‖² = 2 -> 0.5;  sample 1: s - t = (-2, 0), 4 / 4 -> 1.0
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert nsr_loss(s, t).item() == pytest.approx(0.75)


def test_ratio_is_per_sample_then_batch_mean():
    # a high-energy sample must not dominate: per-sample mean (0.01 + 1) / 2, not the pooled
    # ratio (100 * 0.01 + 1) / (100 + 1)
    t = torch.tensor([[10.0], [1.0]])
    s = torch.tensor([[11.0], [0.0]])
    assert nsr_loss(s, t).item() == pytest.approx((0.01 + 1.0) / 2)


def test_feature_maps_zero_and_identical():
    t = torch.arange(1.0, 1 + 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    assert nsr_loss(t.clone(), t).item() == 0.0
    assert nsr_loss(torch.zeros_like(t), t).item() == pytest.approx(1.0)   # zero output: NSR 1
    assert nsr_loss(2 * t, t).item() == pytest.approx(1.0)                 # noise = signal
    scaled = nsr_loss(3 * (t + 0.5), 3 * t)                                # scale invariant
    assert scaled.item() == pytest.approx(nsr_loss(t + 0.5, t).item(), rel=1e-5)


def test_gradient_reaches_the_student_only():
    t = torch.randn(4, 3, 5, 5, requires_grad=True)
    s = torch.randn(4, 3, 5, 5, requires_grad=True)
    nsr_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    # d/ds of mean_b ‖s_b - t_b‖² / ‖t_b‖² = 2 (s_b - t_b) / (B ‖t_b‖²)
    expect = 2 * (s - t).detach() / (4 * t.detach().pow(2).sum(dim=(1, 2, 3), keepdim=True))
    assert torch.allclose(s.grad, expect, rtol=1e-5, atol=1e-7)


def test_all_zero_teacher_stays_finite():
    assert torch.isfinite(nsr_loss(torch.ones(2, 3), torch.zeros(2, 3)))


def test_shape_mismatch_names_the_fix():
    with pytest.raises(ConfigError, match="adapter widths"):
        nsr_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4))
    with pytest.raises(ConfigError, match="B >= 1"):
        nsr_loss(torch.zeros(0, 3), torch.zeros(0, 3))
