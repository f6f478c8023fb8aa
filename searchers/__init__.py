"""Ray Tune searchers over nasq genome spaces (thin adapters around :mod:`nasq.evolution`)."""

from nasq.searchers.genome import (
    AgingEvolutionSearcher,
    GenomeSearcher,
    RandomSearcher,
    TournamentSelectionSearcher,
    make_searcher,
)

__all__ = ["AgingEvolutionSearcher", "GenomeSearcher", "RandomSearcher", "TournamentSelectionSearcher",
           "make_searcher"]
