"""Tournament selection (JASQ, Chen et al. 2018, Algorithm 1)."""

from __future__ import annotations

from nasq.evolution.population import Individual, best_of, worst_of
from nasq.evolution.strategy import Proposal, Strategy


class TournamentSelection(Strategy):
    """JASQ Alg. 1: sample S of the population; the best is the parent, the worst leaves.

    The worst of the parent's sample is removed when the child joins (so a failed
    child leaves the population intact); if it is already gone, the worst of a fresh
    sample leaves instead. The child is the parent mutated by every mutation kind of
    the space in turn (for JASQ: one architecture element and one cell's bits, §3.3).
    """

    kind = "tournament"

    def _breed(self) -> list[Proposal]:
        sample = self.population.sample(self.sample_size, self.rng)
        parent = best_of(sample)
        child = self._fresh(lambda: self._mutate_all(parent.genome))
        return [Proposal(child, "child", [ind.birth for ind in sample])]

    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        if len(self.population) <= self.population_size:
            return
        alive = {m.birth: m for m in self.population.members if m is not ind}
        sample = [alive[b] for b in proposal.sample if b in alive]
        if not sample:
            sample = [m for m in self.population.sample(self.sample_size, self.rng) if m is not ind]
            if not sample:
                return
        self.population.remove(worst_of(sample))
