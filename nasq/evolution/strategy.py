"""The evolution core: propose genomes, take back scores, keep a population.

Pure Python + numpy; Ray Tune adapters in :mod:`nasq.searchers` translate
``suggest``/``on_trial_complete`` into :meth:`Strategy.propose`/:meth:`Strategy.report`.
Scores are normalised so that higher is always better. Optional pieces (issue 7):
hyperparameters searched beside the genome (:mod:`nasq.evolution.hyper`, one extra mutation
kind) and a cost constraint known before evaluation (:mod:`nasq.evolution.constraint`).
"""

from __future__ import annotations

import abc
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


from nasq.errors import CheckpointError, ConfigError, ConstraintError, NasqError, bad_state, \
    check_state_header
from nasq.evolution.constraint import Constraint, Cost, as_constraint
from nasq.evolution.hyper import HPARAMS_KIND, HyperSpace
from nasq.evolution.population import Individual, Population, is_valid_score
from nasq.evolution.rng import BufferedGenerator
from nasq.spaces import Space, get

logger = logging.getLogger(__name__)

STATE_FORMAT = "nasq.evolution"
STATE_VERSION = 1
COUNTERS = ("births", "proposed", "failed", "duplicates", "infeasible_redrawn", "infeasible_gave_up",
            "penalised")

WALK_AFTER = 1  # duplicates before a child is mutated further instead of re-drawn
RANDOM_REDRAW_FACTOR = 10  # random draws (x max_redraws) before a constraint is declared impossible

Point = str | tuple[str, dict]
Candidate = tuple[str, dict]  # (genome string, hyperparameters)


@dataclass(slots=True)
class Proposal:
    """A genome (and its hyperparameters) handed out for evaluation, and why
    (``init``, ``random`` or ``child``)."""

    genome: str
    origin: str
    sample: list[int] = field(default_factory=list)  # births of the tournament sample, for removal
    hparams: dict = field(default_factory=dict)
    parent: str | None = None  # a child's parent genome (weight-shared searches start the child from it)
    # the sample's worst when drawn (not saved: after a restore the births above are searched)
    worst: Individual | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        """Plain-JSON form."""
        out = {"genome": self.genome, "origin": self.origin, "sample": list(self.sample)}
        if self.hparams:
            out["hparams"] = dict(self.hparams)
        if self.parent is not None:
            out["parent"] = self.parent
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Proposal":
        """Inverse of :meth:`to_json`."""
        hparams = data.get("hparams", {})
        if not isinstance(hparams, dict):
            raise TypeError("hparams is not an object")
        parent = data.get("parent")
        return cls(str(data["genome"]), str(data["origin"]), [int(b) for b in data.get("sample", [])],
                   dict(hparams), None if parent is None else str(parent))


def candidate_key(genome: str, hparams: dict) -> str:
    """The string that identifies a candidate for de-duplication (the genome, plus its hparams)."""
    return genome if not hparams else genome + "#" + json.dumps(hparams, sort_keys=True)


class Strategy(abc.ABC):
    """Asynchronous steady-state evolution over genome strings of one space.

    The first ``population_size`` successful evaluations (``points_to_evaluate`` first,
    then random genomes) form the population; after that every proposal is bred from it.
    While the initial population is still being evaluated and nothing else may be
    proposed, :meth:`propose` returns ``None`` (the caller waits). No candidate is proposed
    twice while a new one can be found in ``max_retries`` draws (every candidate ever
    proposed counts, not only the living). With a ``hard`` constraint no genome over the
    limit is ever proposed: over-limit draws are re-drawn up to ``max_redraws`` times, then
    random genomes are tried, then :class:`nasq.errors.ConstraintError` is raised.
    """

    kind: str = ""

    def __init__(
        self,
        space: Space | str,
        *,
        population_size: int,
        sample_size: int,
        seed: int | None = None,
        points_to_evaluate: Sequence[Point] = (),
        max_retries: int = 8,
        constraint: Constraint | Cost | None = None,
        max_cost: float | None = None,
        constraint_mode: str = "hard",
        max_redraws: int = 1000,
        hyper: HyperSpace | None = None,
    ) -> None:
        if population_size < 1:
            raise ConfigError(f"population_size must be >= 1, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ConfigError(
                f"sample_size must be between 1 and population_size ({population_size}), got {sample_size}"
            )
        if max_redraws < 1 or max_retries < 0:
            raise ConfigError(f"max_redraws must be >= 1 and max_retries >= 0, got {max_redraws}, {max_retries}")
        self.space = get(space)
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.seed = seed
        self.max_retries = int(max_retries)
        self.max_redraws = int(max_redraws)
        self.constraint = as_constraint(constraint, max_cost, constraint_mode)
        self.rng = BufferedGenerator(seed)
        self.hyper = HyperSpace()
        self._kinds = tuple(self.space.mutation_kinds)
        self._hyper_ready = False
        self.queue: list[Proposal] = [self._point(p) for p in points_to_evaluate]
        self.seen: set[str] = {candidate_key(p.genome, p.hparams) for p in self.queue}
        self.population = Population()
        self.pending: dict[str, Proposal] = {}
        self.initialized = False
        self.counters = dict.fromkeys(COUNTERS, 0)
        if hyper is not None:
            self.set_hyper(hyper)

    def _point(self, point: Point) -> Proposal:
        genome, hparams = (point, {}) if isinstance(point, str) else (point[0], dict(point[1]))
        genome = self.space.canonical(genome)
        c = self.constraint
        if c is not None and c.mode == "hard" and not c.feasible(genome):
            raise ConfigError(f"point to evaluate {genome!r} has {c.name} {c.cost_of(genome):g} over the "
                              f"limit {c.limit:g}; drop it or raise the limit")
        return Proposal(genome, "init", hparams=hparams)

    @property
    def births(self) -> int:
        """Individuals ever added (the next birth number)."""
        return self.counters["births"]

    @property
    def proposed(self) -> int:
        """Proposals handed out."""
        return self.counters["proposed"]

    @property
    def failed(self) -> int:
        """Trials that came back without a finite score."""
        return self.counters["failed"]

    @property
    def mutation_kinds(self) -> tuple[str, ...]:
        """The space's mutation kinds, plus ``hparams`` when hyperparameters are searched."""
        return self._kinds

    # -- public API -----------------------------------------------------------------
    def set_hyper(self, hyper: HyperSpace) -> None:
        """Search ``hyper`` beside the genome; complete and check the points' values.

        Raises:
            ConfigError: the search already started with other domains, or a point is invalid.
        """
        if self._hyper_ready and hyper == self.hyper:
            return
        if self.counters["proposed"] or self.counters["births"]:
            raise ConfigError(f"search domains {hyper.names} differ from those the search started with "
                              f"({self.hyper.names}); keep the param_space of the run")
        self.hyper = hyper
        self._kinds = tuple(self.space.mutation_kinds) + ((HPARAMS_KIND,) if hyper else ())
        self._check_kinds()
        for k, p in enumerate(self.queue):
            p.hparams = hyper.complete(p.hparams, self.rng, where=f"points_to_evaluate[{k}]")
        self.seen = {candidate_key(p.genome, p.hparams) for p in self.queue}
        self._hyper_ready = True

    def _check_kinds(self) -> None:
        """Hook: check settings that depend on the mutation kinds (see AgingEvolution)."""

    def propose(self, ticket: str) -> str | None:
        """Return the genome to evaluate under ``ticket`` (a trial id), or None to wait.

        Its hyperparameters are ``pending[ticket].hparams`` (see :meth:`hparams_of`).
        """
        if ticket in self.pending:
            return self.pending[ticket].genome
        if not self._hyper_ready:
            self.set_hyper(self.hyper)
        proposal = self._next_proposal()
        if proposal is None:
            return None
        self.pending[ticket] = proposal
        self.counters["proposed"] += 1
        return proposal.genome

    def hparams_of(self, ticket: str) -> dict:
        """The hyperparameters proposed with the genome of a pending ``ticket``."""
        return dict(self.pending[ticket].hparams)

    def report(self, ticket: str, score: Any) -> Individual | None:
        """Take the result of ``ticket``; a non-finite or missing score marks it failed.

        In ``penalty`` constraint mode an over-limit score is scaled by JASQ Eq. 1.
        """
        proposal = self.pending.pop(ticket, None)
        if proposal is None:
            logger.warning("result for unknown trial %s ignored", ticket)
            return None
        if not is_valid_score(score):
            self.counters["failed"] += 1
            logger.warning("trial %s (%s) failed or gave no finite score (%r); not added",
                           ticket, proposal.genome, score)
            return None
        score = float(score)
        c = self.constraint
        if c is not None and c.mode == "penalty" and not c.feasible(proposal.genome):
            score = c.penalised(score, proposal.genome)
            self.counters["penalised"] += 1
        ind = Individual(proposal.genome, score, self.counters["births"], dict(proposal.hparams))
        self.counters["births"] += 1
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
                return self._proposal(self._fresh(self._random), "random")
            return None
        if len(self.population) == 0:
            return None
        children = self._breed()
        self.queue.extend(children[1:])
        return children[0]

    @staticmethod
    def _proposal(candidate: Candidate, origin: str, sample: Sequence[int] = (),
                  parent: str | None = None) -> Proposal:
        return Proposal(candidate[0], origin, list(sample), candidate[1], parent)

    def _random(self) -> Candidate:
        """A uniform random genome and hyperparameters."""
        return self.space.random_str(self.rng), self.hyper.sample(self.rng)

    def _feasible(self, genome: str) -> bool:
        c = self.constraint
        return c is None or c.mode != "hard" or c.feasible(genome)

    def _fresh(self, make: Callable[[], Candidate], walk: Callable[[Candidate], Candidate] | None = None
               ) -> Candidate:
        """Draw candidates with ``make`` until one is feasible and never proposed before.

        Bounded: at most ``max_retries`` + 1 feasible draws for novelty and ``max_redraws`` draws
        in all. After ``WALK_AFTER`` duplicates, ``walk`` (when given) steps on from the last
        duplicate (a child two or more mutations from its parent), so an exhausted neighbourhood
        does not cost a re-evaluation. When nothing new is found a feasible duplicate is
        re-proposed (a dead one rather than a living or pending one). When ``make`` yields
        nothing feasible, random genomes are tried ``RANDOM_REDRAW_FACTOR * max_redraws`` times, and then
        ``ConstraintError`` is raised: an infeasible genome is never returned. With a hard
        constraint's ``draws > 1`` the first ``draws`` new feasible candidates are collected and the
        costliest is returned (boundary draws, :mod:`nasq.evolution.constraint`).
        """
        dups: list[Candidate] = []
        seen = self.seen
        c = self.constraint
        hard = c is not None and c.mode == "hard"
        draws = c.draws if hard else 1
        found: dict[str, Candidate] = {}  # boundary draws: new feasible candidates (constraint docstring)
        for _ in range(self.max_redraws):
            genome, hparams = walk(dups[-1]) if walk is not None and len(dups) >= WALK_AFTER else make()
            if hard and not c.feasible(genome):
                self.counters["infeasible_redrawn"] += 1
                continue
            key = genome if not hparams else candidate_key(genome, hparams)
            if key not in seen and key not in found:
                if draws == 1:
                    seen.add(key)
                    return genome, hparams
                found[key] = (genome, hparams)
                if len(found) == draws:
                    break
                continue
            dups.append((genome, hparams))
            if len(dups) > self.max_retries:
                break
        if found:
            key = max(found, key=lambda k: c.cost_of(found[k][0]))  # ties: the first drawn
            seen.add(key)
            return found[key]
        if dups:  # re-evaluate a dead duplicate rather than a living, pending or queued one
            fallback = next((d for d in dups if not self._busy(*d)), dups[0])
            self.counters["duplicates"] += 1
            logger.debug("no new genome after %d retries; re-evaluating %s", self.max_retries, fallback[0])
            return fallback
        self.counters["infeasible_gave_up"] += 1
        c = self.constraint
        logger.info("%d draws all over the %s limit %g; trying random genomes", self.max_redraws,
                    c.name if c else "cost", c.limit if c else float("nan"))
        for _ in range(RANDOM_REDRAW_FACTOR * self.max_redraws):
            genome, hparams = self._random()
            if self._feasible(genome):
                self.seen.add(candidate_key(genome, hparams))
                return genome, hparams
            self.counters["infeasible_redrawn"] += 1
        raise ConstraintError(f"no genome of space {self.space.name!r} within {c.name if c else 'cost'} <= "
                              f"{c.limit if c else '?'} after {(1 + RANDOM_REDRAW_FACTOR) * self.max_redraws} draws; raise the limit "
                              "or check the constraint")

    def _busy(self, genome: str, hparams: dict) -> bool:
        """True when the candidate is alive, pending or queued."""
        if genome in self.population.genomes and (
                not hparams or any(m.hparams == hparams for m in self.population.members if m.genome == genome)):
            return True
        return any(p.genome == genome and p.hparams == hparams for p in self.pending.values()) or \
            any(p.genome == genome and p.hparams == hparams for p in self.queue)

    def _mutate(self, candidate: Candidate, kind: str) -> Candidate:
        """Apply one mutation kind: a space kind changes the genome, ``hparams`` one hyperparameter."""
        genome, hparams = candidate
        if kind == HPARAMS_KIND:
            return genome, self.hyper.mutate(hparams, self.rng)
        return self.space.mutate_str(genome, self.rng, kind), hparams

    def _mutation_steps(self, start: Candidate
                        ) -> tuple[Callable[[], Candidate], Callable[[Candidate], Candidate]]:
        """``make`` and ``walk`` for :meth:`_fresh`: a child of ``start`` (every kind in turn, see
        :meth:`_mutate_all`), and a child of a candidate (the walk on from a duplicate)."""
        kinds = self._kinds
        if len(kinds) == 1 and kinds[0] != HPARAMS_KIND and not start[1]:  # one genome mutation: no layers
            mutate, rng, kind, genome = self.space.mutate_str, self.rng, kinds[0], start[0]
            return (lambda: (mutate(genome, rng, kind), {})), (lambda c: (mutate(c[0], rng, kind), {}))
        return (lambda: self._mutate_all(*start)), (lambda c: self._mutate_all(*c))

    def _mutate_all(self, genome: str, hparams: dict | None = None) -> Candidate:
        """Apply every mutation kind in turn (JASQ §3.3: one architecture element, then one
        cell's bits; a space with one kind mutates once), then one hyperparameter if searched."""
        kinds = self._kinds
        if len(kinds) == 1 and kinds[0] != HPARAMS_KIND:  # the common case: one genome mutation
            return self.space.mutate_str(genome, self.rng, kinds[0]), dict(hparams) if hparams else {}
        candidate: Candidate = (genome, dict(hparams or {}))
        for kind in kinds:
            candidate = self._mutate(candidate, kind)
        return candidate

    @abc.abstractmethod
    def _breed(self) -> list[Proposal]:
        """Pick a parent from the population and return its children (at least one)."""

    @abc.abstractmethod
    def _after_insert(self, ind: Individual, proposal: Proposal) -> None:
        """Remove individuals after ``ind`` joined, to keep the population size."""

    # -- state ----------------------------------------------------------------------
    def params(self) -> dict:
        """Constructor parameters recorded in the state (checked on restore)."""
        out: dict = {"population_size": self.population_size, "sample_size": self.sample_size}
        if self.constraint is not None:
            out["constraint"] = self.constraint.params()
        return out

    def state_dict(self) -> dict:
        """The full state as a JSON-serialisable, versioned document."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "kind": self.kind,
            "space": self.space.name,
            "params": self.params(),
            "seed": self.seed,
            "hyper": self.hyper.to_json(),
            "population": [ind.to_json() for ind in self.population.members],
            "pending": {t: p.to_json() for t, p in self.pending.items()},
            "queue": [p.to_json() for p in self.queue],
            "seen": sorted(self.seen),
            "initialized": self.initialized,
            "counters": dict(self.counters),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict, source: object = "state") -> None:
        """Restore from :meth:`state_dict`; raise ``CheckpointError`` for foreign or corrupt state.

        Everything is built first and swapped in only when the whole state is valid, so a
        failed restore leaves the strategy as it was.
        """
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
            hyper = HyperSpace.from_json(state.get("hyper", []))
            population = Population(Individual.from_json(d) for d in state["population"])
            pending = {str(t): Proposal.from_json(p) for t, p in state["pending"].items()}
            queue = [Proposal.from_json(p) for p in state["queue"]]
            initialized = state["initialized"]
            if not isinstance(initialized, bool):
                raise TypeError(f"initialized is {initialized!r}, not a bool")
            counters = dict.fromkeys(COUNTERS, 0)
            for name in ("births", "proposed", "failed"):
                counters[name] = int(state["counters"][name])
            for name in COUNTERS[3:]:
                counters[name] = int(state["counters"].get(name, 0))
            if "seen" in state:
                if not isinstance(state["seen"], list):
                    raise TypeError("seen is not a list")
                seen = {str(k) for k in state["seen"]}
            else:
                seen = {candidate_key(p.genome, p.hparams)
                        for p in [*population.members, *pending.values(), *queue]}
            rng = BufferedGenerator()
            rng.set_state(state["rng"])
        except (KeyError, TypeError, ValueError, AttributeError, NasqError) as exc:
            raise CheckpointError(bad_state(source, f"corrupt field ({exc})", fix)) from exc
        if self._hyper_ready and self.hyper and hyper != self.hyper:
            raise CheckpointError(bad_state(source, f"its search domains {hyper.names} differ from this "
                                            f"searcher's {self.hyper.names}", "keep the run's param_space"))
        (self.hyper, self.population, self.pending, self.queue, self.initialized, self.counters,
         self.seen, self.seed, self.rng, self._hyper_ready) = (
            hyper, population, pending, queue, initialized, counters, seen, state.get("seed"), rng, True)
        self._kinds = tuple(self.space.mutation_kinds) + ((HPARAMS_KIND,) if hyper else ())
