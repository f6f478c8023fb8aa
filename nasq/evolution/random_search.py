"""Random search baseline: every proposal is an independent uniform sample."""

from __future__ import annotations

from nasq.evolution.population import Individual
from nasq.evolution.strategy import Proposal, Strategy


class RandomSampling(Strategy):
    """Uniform sampling (inside the limit with a hard constraint); keeps the best
    ``population_size`` results only for reporting."""

    kind = "random"

    def __init__(self, space, *, population_size: int = 1, seed: int | None = None, **kwargs) -> None:
        kwargs.setdefault("sample_size", 1)
        super().__init__(space, population_size=population_size, seed=seed, **kwargs)
        self.initialized = True

    def _next_proposal(self) -> Proposal | None:
        if self.queue:
            return self.queue.pop(0)
        return self._proposal(self._fresh(self._random), "random")

    def _breed(self) -> list[Proposal]:  # pragma: no cover - never called
        raise AssertionError("random search does not breed")

    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        while len(self.population) > self.population_size:
            self.population.remove(self.population.worst())
