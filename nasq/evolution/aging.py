"""Aging (regularized) evolution (Real et al. 2019; SpaceEvo §4.4 with two children)."""

from __future__ import annotations

from nasq.errors import ConfigError
from nasq.evolution.population import Individual
from nasq.evolution.strategy import Proposal, Strategy


class AgingEvolution(Strategy):
    """Parent = best of S sampled (drawn directly, :meth:`Population.tournament_winner`); each
    child joins and the oldest leaves.

    With ``children_per_parent=1`` the child applies the mutation kinds in turn.
    With ``children_per_parent`` equal to the number of mutation kinds (SpaceEvo §4.4: block
    type and widths; plus ``hparams`` when hyperparameters are searched) each parent yields one
    child per kind, and as many oldest leave as they join.
    """

    kind = "aging"

    def __init__(self, space, *, children_per_parent: int = 1, **kwargs) -> None:
        self.children_per_parent = int(children_per_parent)
        super().__init__(space, **kwargs)
        # one more child (the hparams kind) is allowed until the search domains are known
        self._check_kinds(extra=0 if self._hyper_ready else 1)

    def _check_kinds(self, extra: int = 0) -> None:
        kinds = len(self.mutation_kinds)
        n = self.children_per_parent
        if n < 1 or (n > 1 and n not in range(kinds, kinds + extra + 1)):
            raise ConfigError(
                f"children_per_parent must be 1 or the number of mutation kinds of space "
                f"{self.space.name!r} ({kinds}: {list(self.mutation_kinds)}), got {n}"
            )

    def params(self) -> dict:
        """Constructor parameters recorded in the state."""
        return {**super().params(), "children_per_parent": self.children_per_parent}

    def _breed(self) -> list[Proposal]:
        parent = self.population.tournament_winner(self.sample_size, self.rng)
        start = (parent.genome, parent.hparams)
        if self.children_per_parent == 1:
            return [self._proposal(self._fresh(*self._mutation_steps(start)), "child", (), parent.genome)]
        return [self._proposal(self._fresh(lambda k=kind: self._mutate(start, k),
                                           lambda c, k=kind: self._mutate(c, k)), "child", (), parent.genome)
                for kind in self.mutation_kinds]

    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        while len(self.population) > self.population_size:
            self.population.remove(self.population.oldest())
