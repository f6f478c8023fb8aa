"""Evolutionary search strategies over genome strings (pure core, no Ray)."""

from nasq.evolution.aging import AgingEvolution
from nasq.evolution.constraint import Constraint, as_constraint
from nasq.evolution.hyper import ChoiceParam, HyperSpace, NumberParam
from nasq.evolution.population import Individual, Population
from nasq.evolution.random_search import RandomSampling
from nasq.evolution.strategy import Proposal, Strategy
from nasq.evolution.tournament import TournamentSelection

__all__ = ["AgingEvolution", "ChoiceParam", "Constraint", "HyperSpace", "Individual", "NumberParam",
           "Population", "Proposal", "RandomSampling", "Strategy", "TournamentSelection", "as_constraint"]
