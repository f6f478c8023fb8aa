"""Ray Tune ``Searcher`` adapters for the evolutionary strategies.

Each searcher owns one :class:`nasq.evolution.Strategy` and translates Tune's
``suggest``/``on_trial_complete`` into ``propose``/``report``. Configs carry the
encoded genome under ``"genome"``; state is a versioned JSON document written
atomically (never a pickle). Search domains of the ``param_space`` (``tune.uniform``,
``tune.loguniform``, ``tune.choice``, ...) become hyperparameters searched beside the genome
(issue 7 §2, see :mod:`nasq.searchers.domains`); constants are copied into every config.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Callable, Sequence

from ray.tune.search import Searcher

from nasq.errors import CheckpointError, ConfigError, ConstraintError, bad_state
from nasq.evolution import AgingEvolution, RandomSampling, Strategy, TournamentSelection
from nasq.evolution.constraint import Constraint, Cost
from nasq.searchers.domains import split_param_space
from nasq.spaces import Space

logger = logging.getLogger(__name__)

GENOME_KEY = "genome"
PARENT_KEY = "parent_genome"  # a child's parent genome, for trainables that inherit weights (JASQ issue 11)
STATE_FILE_TEMPLATE = "nasq-searcher-state-{}.json"

Fitness = Callable[[dict], float]


class GenomeSearcher(Searcher):
    """Base adapter: a Tune searcher driven by a pure evolution strategy.

    The score the strategy sees is ``sign * value`` where ``value`` is ``fitness(result)``
    when a fitness callable is given, else ``result[metric]``, and ``sign`` is +1 for
    ``mode="max"`` and -1 for ``mode="min"`` (selection code always maximises).
    """

    CKPT_FILE_TMPL = STATE_FILE_TEMPLATE

    def __init__(self, strategy: Strategy, *, metric: str | None = None, mode: str | None = None,
                 fitness: Fitness | None = None, extra_config: dict | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.strategy = strategy
        self.fitness = fitness
        self.extra_config = dict(extra_config or {})

    # -- Tune contract ----------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Take metric/mode from ``TuneConfig`` when not given to the constructor, and the
        ``param_space``: constants go into every config, search domains are searched beside
        the genome (sampled, mutated as the ``hparams`` kind, kept in the state).

        Raises:
            ConfigError: a domain nasq cannot search (``sample_from``, ``grid_search``, ``randn``,
                domains nested in dicts or lists), naming the key and what is supported.
        """
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            self._mode = mode
        if config:
            constants, hyper = split_param_space({k: v for k, v in config.items() if k != GENOME_KEY})
            self.strategy.set_hyper(hyper)
            self.extra_config.update(constants)
            for name in hyper.names:
                self.extra_config.pop(name, None)
        return True

    def suggest(self, trial_id: str) -> dict | None:
        """Return ``{"genome": ...}`` plus the constant config and the trial's sampled
        hyperparameters, or None while the population waits."""
        self._check_properties()
        try:
            genome = self.strategy.propose(trial_id)
        except ConstraintError as exc:  # no feasible genome left to propose: end the search, not the driver
            logger.error("search finished early: %s", exc)
            return Searcher.FINISHED
        if genome is None:
            return None
        proposal = self.strategy.pending[trial_id]
        parent = {PARENT_KEY: proposal.parent} if proposal.parent is not None else {}
        return {**self.extra_config, **proposal.hparams, **parent, GENOME_KEY: genome}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Feed the trial's score back; errors and missing or non-finite metrics count as failed."""
        score = None if error or result is None else self._score(result)
        self.strategy.report(trial_id, score)

    def _score(self, result: dict) -> Any:
        try:
            value = self.fitness(result) if self.fitness is not None else result.get(self._metric)
        except Exception as exc:  # a fitness that cannot be computed marks a failed individual
            logger.warning("fitness failed on result %s: %s", result, exc)
            return None
        if value is None or isinstance(value, bool):
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if self._mode == "max" else -value

    def _check_properties(self) -> None:
        if self._metric is None and self.fitness is None:
            raise ConfigError("searcher has no metric: pass metric= to the searcher, or set TuneConfig(metric=...) "
                              "with a non-empty param_space (Ray Tune forwards metric/mode only then)")
        if self._mode not in ("min", "max"):
            raise ConfigError(f"searcher mode must be 'min' or 'max', got {self._mode!r}: pass mode= to the "
                              "searcher, or set TuneConfig(mode=...) with a non-empty param_space")

    # -- state ------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Versioned JSON-able state: the strategy's plus metric and mode."""
        return {"searcher": type(self).__name__, "metric": self._metric, "mode": self._mode,
                "extra_config": self.extra_config, "strategy": self.strategy.state_dict()}

    def set_state(self, state: dict, source: object = "state") -> None:
        """Restore from :meth:`get_state`; raise ``CheckpointError`` for foreign or corrupt state."""
        if not isinstance(state, dict) or "strategy" not in state:
            raise CheckpointError(bad_state(source, "not a nasq searcher state",
                                            "point at a state file written by a nasq searcher"))
        if state.get("searcher") != type(self).__name__:
            raise CheckpointError(bad_state(source, f"written by {state.get('searcher')}, not "
                                            f"{type(self).__name__}", "use the same searcher kind"))
        extra = state.get("extra_config", {})
        if not isinstance(extra, dict):
            raise CheckpointError(bad_state(source, "corrupt field (extra_config is not an object)",
                                            "point at a state written by the same nasq searcher"))
        self.strategy.load_state_dict(state["strategy"], source)  # builds, then swaps: all or nothing
        self._metric = state.get("metric", self._metric)
        self._mode = state.get("mode", self._mode)
        self.extra_config = dict(extra)

    def save(self, checkpoint_path: str) -> None:
        """Write the state as JSON, atomically (temp file + ``os.replace``)."""
        directory = os.path.dirname(os.path.abspath(checkpoint_path))
        fd, tmp = tempfile.mkstemp(prefix=".nasq-state-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.get_state(), f)
            os.replace(tmp, checkpoint_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def restore(self, checkpoint_path: str) -> None:
        """Read a state written by :meth:`save`."""
        try:
            with open(checkpoint_path) as f:
                state = json.load(f)
        except FileNotFoundError as exc:
            raise CheckpointError(bad_state(checkpoint_path, "file not found",
                                            "check the run directory")) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(bad_state(checkpoint_path, f"not valid JSON ({exc})",
                                            "the file is corrupt; resume from another run directory")) from exc
        self.set_state(state, checkpoint_path)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Save into an experiment directory (called by Tune at each experiment checkpoint)."""
        self.save(os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str)))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Restore the newest state file in an experiment directory."""
        pattern = self.CKPT_FILE_TMPL.format("")
        stem, suffix = pattern.split(".json")[0], ".json"
        files = [f for f in os.listdir(checkpoint_dir) if f.startswith(stem) and f.endswith(suffix)]
        if not files:
            raise CheckpointError(bad_state(checkpoint_dir, "no nasq searcher state in it",
                                            "point at the run's experiment directory"))
        # names end in Tune's session time stamp, so they sort chronologically (mtimes do not
        # survive Tune's copy of the experiment directory on restore)
        newest = max(files)
        self.restore(os.path.join(checkpoint_dir, newest))


class TournamentSelectionSearcher(GenomeSearcher):
    """JASQ Algorithm 1 (tournament selection) as a Ray Tune searcher.

    ``constraint`` (a :class:`nasq.evolution.Constraint`, or a ``genome -> cost`` callable with
    ``max_cost`` and ``constraint_mode``) is enforced in the core (issue 7 §3).
    """

    def __init__(self, space: Space | str, *, population_size: int = 16, sample_size: int = 16,
                 metric: str | None = None, mode: str | None = None, seed: int | None = None,
                 points_to_evaluate: Sequence[str | dict] | None = None, fitness: Fitness | None = None,
                 extra_config: dict | None = None, constraint: Constraint | Cost | None = None,
                 max_cost: float | None = None, constraint_mode: str = "hard") -> None:
        strategy = TournamentSelection(space, population_size=population_size, sample_size=sample_size,
                                       seed=seed, points_to_evaluate=_points(points_to_evaluate),
                                       constraint=constraint, max_cost=max_cost,
                                       constraint_mode=constraint_mode)
        super().__init__(strategy, metric=metric, mode=mode, fitness=fitness, extra_config=extra_config)


class AgingEvolutionSearcher(GenomeSearcher):
    """Regularized (aging) evolution as a Ray Tune searcher; SpaceEvo §4.4 with two children.

    ``constraint``/``max_cost``/``constraint_mode`` as in :class:`TournamentSelectionSearcher`.
    """

    def __init__(self, space: Space | str, *, population_size: int = 500, sample_size: int = 125,
                 children_per_parent: int = 1, metric: str | None = None, mode: str | None = None,
                 seed: int | None = None, points_to_evaluate: Sequence[str | dict] | None = None,
                 fitness: Fitness | None = None, extra_config: dict | None = None,
                 constraint: Constraint | Cost | None = None, max_cost: float | None = None,
                 constraint_mode: str = "hard") -> None:
        strategy = AgingEvolution(space, population_size=population_size, sample_size=sample_size,
                                  children_per_parent=children_per_parent, seed=seed,
                                  points_to_evaluate=_points(points_to_evaluate), constraint=constraint,
                                  max_cost=max_cost, constraint_mode=constraint_mode)
        super().__init__(strategy, metric=metric, mode=mode, fitness=fitness, extra_config=extra_config)


class RandomSearcher(GenomeSearcher):
    """Uniform random sampling of genomes (the baseline); inside the limit with a hard constraint."""

    def __init__(self, space: Space | str, *, metric: str | None = None, mode: str | None = None,
                 seed: int | None = None, points_to_evaluate: Sequence[str | dict] | None = None,
                 fitness: Fitness | None = None, extra_config: dict | None = None,
                 constraint: Constraint | Cost | None = None, max_cost: float | None = None,
                 constraint_mode: str = "hard", **_: Any) -> None:
        strategy = RandomSampling(space, seed=seed, points_to_evaluate=_points(points_to_evaluate),
                                  constraint=constraint, max_cost=max_cost, constraint_mode=constraint_mode)
        super().__init__(strategy, metric=metric, mode=mode, fitness=fitness, extra_config=extra_config)


SEARCHERS: dict[str, type[GenomeSearcher]] = {
    "tournament": TournamentSelectionSearcher,
    "aging": AgingEvolutionSearcher,
    "random": RandomSearcher,
}


def make_searcher(kind: str, space: Space | str, **kwargs: Any) -> GenomeSearcher:
    """Build a searcher by name (``tournament``, ``aging`` or ``random``).

    ``kwargs`` go to the searcher's constructor (``constraint=``, ``max_cost=``,
    ``constraint_mode=`` for constraint-aware evolution, issue 7 §3).
    """
    if kind not in SEARCHERS:
        from nasq.errors import bad_token

        raise ConfigError(bad_token("searcher", kind, sorted(SEARCHERS)))
    if kind == "random":
        kwargs = {k: v for k, v in kwargs.items() if k not in ("population_size", "sample_size",
                                                              "children_per_parent")}
    return SEARCHERS[kind](space, **kwargs)


def _points(points: Sequence[str | dict] | None) -> list[str | tuple[str, dict]]:
    """Genome strings, or ``{"genome": ..., <hyperparameter>: value}`` dicts as (genome, values)."""
    out: list[str | tuple[str, dict]] = []
    for k, p in enumerate(points or ()):
        if isinstance(p, dict):
            if GENOME_KEY not in p:
                raise ConfigError(f"points_to_evaluate[{k}] has no {GENOME_KEY!r} key; give "
                                  f"{{{GENOME_KEY!r}: <genome string>, ...}}")
            out.append((p[GENOME_KEY], {n: v for n, v in p.items() if n != GENOME_KEY}))
        else:
            out.append(p)
    return out
