"""Aging (regularized) evolution (Real et al. 2019; SpaceEvo §4.4 with two children)."""

from __future__ import annotations

from nasq.errors import ConfigError
from nasq.evolution.population import Individual, best_of
from nasq.evolution.strategy import Proposal, Strategy


class AgingEvolution(Strategy):
    """Parent = best of S sampled; each child joins and the oldest leaves.

    With ``children_per_parent=1`` the child applies the space's mutation kinds in turn.
    With ``children_per_parent=2`` (SpaceEvo §4.4) each parent yields one child per
    mutation kind (e.g. block type, widths), and the two oldest leave as they join.
    """

    kind = "aging"

    def __init__(self, space, *, children_per_parent: int = 1, **kwargs) -> None:
        super().__init__(space, **kwargs)
        kinds = len(self.space.mutation_kinds)
        if children_per_parent < 1 or (children_per_parent > 1 and children_per_parent != kinds):
            raise ConfigError(
                f"children_per_parent must be 1 or the number of mutation kinds of space "
                f"{self.space.name!r} ({kinds}), got {children_per_parent}"
            )
        self.children_per_parent = int(children_per_parent)

    def params(self) -> dict:
        """Constructor parameters recorded in the state."""
        return {**super().params(), "children_per_parent": self.children_per_parent}

    def _breed(self) -> list[Proposal]:
        parent = best_of(self.population.sample(self.sample_size, self.rng))
        if self.children_per_parent == 1:
            return [Proposal(self._fresh(lambda: self._mutate_all(parent.genome)), "child")]
        children = []
        for kind in self.space.mutation_kinds:
            genome = self._fresh(lambda k=kind: self.space.mutate_str(parent.genome, self.rng, k))
            children.append(Proposal(genome, "child"))
        return children

    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        while len(self.population) > self.population_size:
            self.population.remove(self.population.oldest())
