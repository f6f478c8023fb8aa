"""JASQ Eq. 1 fitness."""

from __future__ import annotations

import pytest

from nasq.errors import ConfigError
from nasq.fitness import jasq_fitness, make_fitness


def test_no_penalty_at_or_under_target() -> None:
    assert jasq_fitness(0.9, 1.0, 2.0, -0.5) == 0.9
    assert jasq_fitness(0.9, 2.0, 2.0, -0.5) == 0.9


def test_penalty_over_target() -> None:
    # size four times the target, gamma -0.5: 0.8 * 4 ** -0.5 = 0.4
    assert jasq_fitness(0.8, 8.0, 2.0, -0.5) == pytest.approx(0.4)
    assert jasq_fitness(0.8, 2.2, 2.0) == pytest.approx(0.8 * 1.1**-0.2)
    assert jasq_fitness(0.8, 2.2, 2.0) < jasq_fitness(0.8, 2.1, 2.0) < 0.8


def test_make_fitness_reads_result_keys() -> None:
    f = make_fitness(2.0, -1.0)
    assert f({"val_acc": 0.6, "size_mb": 3.0}) == pytest.approx(0.4)
    assert make_fitness(None) is None


@pytest.mark.parametrize(
    "ts,gamma", [(0.0, -0.2), (-1.0, -0.2), (1.0, 0.0), (1.0, 0.3), (float("inf"), -0.2)]
)
def test_bad_settings_rejected(ts: float, gamma: float) -> None:
    with pytest.raises(ConfigError):
        jasq_fitness(0.5, 1.0, ts, gamma)
