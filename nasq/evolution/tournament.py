"""Tournament selection (JASQ, Chen et al. 2018, Algorithm 1)."""

from __future__ import annotations

from nasq.evolution.population import Individual, worst_of
from nasq.evolution.strategy import Proposal, Strategy


class TournamentSelection(Strategy):
    """JASQ Alg. 1: sample S of the population; the best is the parent, the worst leaves.

    The worst of the parent's sample is removed when the child joins (so a failed
    child leaves the population intact); if it is already gone, the worst of a fresh
    sample leaves instead. The child is the parent mutated by every mutation kind in turn
    (for JASQ: one architecture element and one cell's bits, §3.3; then one hyperparameter
    when Tune search domains are searched beside the genome).
    """

    kind = "tournament"

    def _breed(self) -> list[Proposal]:
        parent, worst, births = self.population.tournament_extremes(self.sample_size, self.rng)
        child = self._fresh(*self._mutation_steps((parent.genome, parent.hparams)))
        proposal = self._proposal(child, "child", births, parent.genome)
        proposal.worst = worst
        return [proposal]

    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        if len(self.population) <= self.population_size:
            return
        # The sample's worst when drawn is still the worst of its living members while it lives.
        worst = proposal.worst
        if worst is None or worst is ind or not self.population.is_alive(worst):
            worst = self.population.worst_among(proposal.sample, exclude=ind)
        if worst is None:
            sample = [m for m in self.population.sample(self.sample_size, self.rng) if m is not ind]
            if not sample:
                return
            worst = worst_of(sample)
        self.population.remove(worst)
