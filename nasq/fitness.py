"""JASQ fitness, Eq. 1: accuracy traded off against model size.

``F = acc * (size / TS) ** gamma``, with ``gamma = 0`` when ``size <= TS`` (no penalty under the
target size) and the configured negative exponent otherwise.
"""

from __future__ import annotations

import math
from typing import Callable

from nasq.errors import ConfigError

DEFAULT_GAMMA = -0.2


def check_target(target_size_mb: float, gamma: float = DEFAULT_GAMMA) -> None:
    """Validate Eq. 1's settings: ``TS > 0`` (finite) and ``gamma < 0``."""
    if (
        not isinstance(target_size_mb, (int, float))
        or not math.isfinite(target_size_mb)
        or target_size_mb <= 0
    ):
        raise ConfigError(
            f"target size {target_size_mb!r} MB must be a positive number; set --target-size-mb"
        )
    if not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma >= 0:
        raise ConfigError(f"size exponent gamma={gamma!r} must be negative (JASQ uses about -0.2)")


def jasq_fitness(acc: float, size_mb: float, target_size_mb: float, gamma: float = DEFAULT_GAMMA) -> float:
    """JASQ Eq. 1: ``acc * (size / TS) ** gamma`` when over the target size, else ``acc``.

    Args:
        acc: validation accuracy (any scale; the fitness has the same scale).
        size_mb: model size in MB.
        target_size_mb: the target size ``TS`` in MB (> 0).
        gamma: the exponent applied over the target (< 0).
    """
    check_target(target_size_mb, gamma)
    if not math.isfinite(size_mb) or size_mb < 0:
        raise ConfigError(f"model size {size_mb!r} MB must be a non-negative number")
    g = 0.0 if size_mb <= target_size_mb else gamma
    return float(acc) * (size_mb / target_size_mb) ** g


def make_fitness(
    target_size_mb: float | None,
    gamma: float = DEFAULT_GAMMA,
    acc_key: str = "val_acc",
    size_key: str = "size_mb",
) -> Callable[[dict], float] | None:
    """A result -> fitness function for Eq. 1, or ``None`` when no target size is set (fitness = accuracy)."""
    if target_size_mb is None:
        return None
    check_target(target_size_mb, gamma)

    def fitness(result: dict) -> float:
        return jasq_fitness(result[acc_key], result[size_key], target_size_mb, gamma)

    return fitness
