"""Evolutionary search strategies over genome strings (pure core, no Ray)."""

from nasq.evolution.aging import AgingEvolution
from nasq.evolution.population import Individual, Population
from nasq.evolution.random_search import RandomSampling
from nasq.evolution.strategy import Proposal, Strategy
from nasq.evolution.tournament import TournamentSelection

__all__ = ["AgingEvolution", "Individual", "Population", "Proposal", "RandomSampling", "Strategy",
           "TournamentSelection"]
