"""The evolution core: propose genomes, take back scores, keep a population.

Pure Python + numpy; Ray Tune adapters in :mod:`nasq.searchers` translate
``suggest``/``on_trial_complete`` into :meth:`Strategy.propose`/:meth:`Strategy.report`.
Scores are normalised so that higher is always better.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nasq.errors import CheckpointError, ConfigError, bad_state, check_state_header
from nasq.evolution.population import Individual, Population, is_valid_score
from nasq.spaces import Space, get

logger = logging.getLogger(__name__)

STATE_FORMAT = "nasq.evolution"
STATE_VERSION = 1


@dataclass
class Proposal:
    """A genome handed out for evaluation, and why (``init``, ``random`` or ``child``)."""

    genome: str
    origin: str
    sample: list[int] = field(default_factory=list)  # births of the tournament sample, for removal

    def to_json(self) -> dict:
        """Plain-JSON form."""
        return {"genome": self.genome, "origin": self.origin, "sample": list(self.sample)}

    @classmethod
    def from_json(cls, data: dict) -> "Proposal":
        """Inverse of :meth:`to_json`."""
        return cls(str(data["genome"]), str(data["origin"]), [int(b) for b in data.get("sample", [])])


class Strategy(abc.ABC):
    """Asynchronous steady-state evolution over genome strings of one space.

    The first ``population_size`` successful evaluations (``points_to_evaluate`` first,
    then random genomes) form the population; after that every proposal is bred from it.
    While the initial population is still being evaluated and nothing else may be
    proposed, :meth:`propose` returns ``None`` (the caller waits).
    """

    kind: str = ""

    def __init__(
        self,
        space: Space | str,
        *,
        population_size: int,
        sample_size: int,
        seed: int | None = None,
        points_to_evaluate: Sequence[str] = (),
        max_retries: int = 8,
    ) -> None:
        if population_size < 1:
            raise ConfigError(f"population_size must be >= 1, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ConfigError(
                f"sample_size must be between 1 and population_size ({population_size}), got {sample_size}"
            )
        self.space = get(space)
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.seed = seed
        self.max_retries = int(max_retries)
        self.rng = np.random.default_rng(seed)
        self.queue: list[Proposal] = [Proposal(self.space.canonical(p), "init") for p in points_to_evaluate]
        self.population = Population()
        self.pending: dict[str, Proposal] = {}
        self.initialized = False
        self.births = 0
        self.proposed = 0
        self.failed = 0

    # -- public API -----------------------------------------------------------------
    def propose(self, ticket: str) -> str | None:
        """Return the genome to evaluate under ``ticket`` (a trial id), or None to wait."""
        if ticket in self.pending:
            return self.pending[ticket].genome
        proposal = self._next_proposal()
        if proposal is None:
            return None
        self.pending[ticket] = proposal
        self.proposed += 1
        return proposal.genome

    def report(self, ticket: str, score: Any) -> Individual | None:
        """Take the result of ``ticket``; a non-finite or missing score marks it failed."""
        proposal = self.pending.pop(ticket, None)
        if proposal is None:
            logger.warning("result for unknown trial %s ignored", ticket)
            return None
        if not is_valid_score(score):
            self.failed += 1
            logger.warning("trial %s (%s) failed or gave no finite score (%r); not added",
                           ticket, proposal.genome, score)
            return None
        ind = Individual(proposal.genome, float(score), self.births)
        self.births += 1
        self.population.add(ind)
        self._after_insert(ind, proposal)
        if not self.initialized and len(self.population) >= self.population_size:
            self.initialized = True
        return ind

    def best(self) -> Individual | None:
        """The best individual currently alive."""
        return self.population.best()

    # -- breeding -------------------------------------------------------------------
    def _next_proposal(self) -> Proposal | None:
        if self.queue:
            return self.queue.pop(0)
        if not self.initialized:
            waiting = sum(1 for p in self.pending.values() if p.origin in ("init", "random"))
            if len(self.population) + waiting < self.population_size:
                return Proposal(self._fresh(lambda: self.space.random_str(self.rng)), "random")
            return None
        if len(self.population) == 0:
            return None
        children = self._breed()
        self.queue.extend(children[1:])
        return children[0]

    def _fresh(self, make) -> str:
        """Call ``make`` until it returns a genome not alive or pending, at most ``max_retries`` times."""
        busy = self.population.genomes
        pending = {p.genome for p in self.pending.values()} | {p.genome for p in self.queue}
        genome = make()
        for _ in range(self.max_retries):
            if genome not in busy and genome not in pending:
                return genome
            genome = make()
        logger.debug("no new genome after %d retries; re-evaluating %s", self.max_retries, genome)
        return genome

    def _mutate_all(self, genome: str) -> str:
        """Apply every mutation kind of the space in turn (JASQ §3.3: one architecture element,
        then one cell's bits; a space with one kind mutates once)."""
        for kind in self.space.mutation_kinds:
            genome = self.space.mutate_str(genome, self.rng, kind)
        return genome

    @abc.abstractmethod
    def _breed(self) -> list[Proposal]:
        """Pick a parent from the population and return its children (at least one)."""

    @abc.abstractmethod
    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        """Remove individuals after ``ind`` joined, to keep the population size."""

    # -- state ----------------------------------------------------------------------
    def params(self) -> dict:
        """Constructor parameters recorded in the state (checked on restore)."""
        return {"population_size": self.population_size, "sample_size": self.sample_size}

    def state_dict(self) -> dict:
        """The full state as a JSON-serialisable, versioned document."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "kind": self.kind,
            "space": self.space.name,
            "params": self.params(),
            "seed": self.seed,
            "population": [ind.to_json() for ind in self.population.members],
            "pending": {t: p.to_json() for t, p in self.pending.items()},
            "queue": [p.to_json() for p in self.queue],
            "initialized": self.initialized,
            "counters": {"births": self.births, "proposed": self.proposed, "failed": self.failed},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict, source: object = "state") -> None:
        """Restore from :meth:`state_dict`; raise ``CheckpointError`` for foreign or corrupt state."""
        fix = "point at a state written by the same nasq searcher, or start a new run"
        check_state_header(state, STATE_FORMAT, STATE_VERSION, source, "searcher state", fix)
        if state.get("kind") != self.kind or state.get("space") != self.space.name:
            raise CheckpointError(bad_state(
                source, f"it is a {state.get('kind')}/{state.get('space')} state, this searcher is "
                f"{self.kind}/{self.space.name}", fix))
        if state.get("params") != self.params():
            raise CheckpointError(bad_state(
                source, f"parameters {state.get('params')} differ from {self.params()}", fix))
        try:
            self.population = Population(Individual.from_json(d) for d in state["population"])
            self.pending = {str(t): Proposal.from_json(p) for t, p in state["pending"].items()}
            self.queue = [Proposal.from_json(p) for p in state["queue"]]
            self.initialized = bool(state["initialized"])
            counters = state["counters"]
            self.births, self.proposed, self.failed = (
                int(counters["births"]), int(counters["proposed"]), int(counters["failed"]))
            self.seed = state.get("seed")
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
            self.rng = rng
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(bad_state(source, f"corrupt field ({exc})", fix)) from exc
