"""Make a search inspectable in the Ray dashboard: a named status actor, its Tune callback, trial reprs.

- :class:`StatusBoard`, run as the named actor ``nasq-status-<run name>`` (namespace ``nasq``,
  ``num_cpus=0``), holds the run's :class:`nasq.status.SearchStatus` and logs one line per
  finished trial (the dashboard shows the actor's log). Ray records an actor's ``repr`` once,
  when the actor is created, so every update is also sent as a task *named* after the trial
  (``trial <id> done val_acc=71.2 ...``): the dashboard's task list is the live progress.
- :class:`SearchStatusCallback` (driver side) feeds the status after every trial, writes
  ``RUN_DIR/live.json`` and updates the actor.
- :func:`with_trial_repr` gives a function trainable a repr naming trial id, genome (short)
  and last score; class trainables define ``__repr__`` with :func:`nasq.status.trial_repr`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from nasq.status import (
    DONE,
    FAILED,
    INFEASIBLE,
    LIVE_FILE,
    NAMESPACE,
    SearchStatus,
    finite_or_none,
    read_live,
    short_genome,
    status_actor_name,
    trial_repr,
)

logger = logging.getLogger(__name__)

_MAX_TASK_NAME = 200


class StatusBoard:
    """The latest status of one search; wrapped as a named Ray actor by :func:`create_status_actor`."""

    def __init__(self, doc: dict) -> None:
        self.status = SearchStatus.from_json(doc)
        self._log = logging.getLogger(f"nasq.status.{self.status.run}")
        if not self._log.handlers:  # inside a Ray worker: log lines go to the actor's log file
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s nasq status: %(message)s"))
            self._log.addHandler(handler)
            self._log.setLevel(logging.INFO)
            self._log.propagate = False
        self._log.info("%s", self.status.summary())

    def update(self, doc: dict) -> str:
        """Take the driver's newest status; log and return its one-line summary."""
        self.status = SearchStatus.from_json(doc)
        line = self.status.summary()
        self._log.info("%s", line)
        return line

    def get(self) -> dict:
        """The status as its JSON document."""
        return self.status.to_json()

    def __repr__(self) -> str:
        return repr(self.status)


def create_status_actor(status: SearchStatus) -> Any:
    """Start the run's named status actor (replacing a stale one of that name) and return its handle."""
    import ray

    name = status_actor_name(status.run)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    except ValueError:
        pass
    actor_cls = ray.remote(num_cpus=0, max_restarts=0)(StatusBoard)
    return actor_cls.options(name=name, namespace=NAMESPACE).remote(status.to_json())


def _outcome(result: dict, metric: str, fitness: Callable[[dict], Any] | None) -> tuple[str, Any]:
    """(outcome, objective) of a finished trial's last result, as the searchers score it."""
    if finite_or_none(result.get(metric)) is None:
        return FAILED, None
    if fitness is None:
        return DONE, result.get(metric)
    try:
        value = fitness(result)
    except (TypeError, ValueError):
        return FAILED, None
    return (INFEASIBLE, None) if value is None else (DONE, value)


class SearchStatusCallback(Callback):
    """Tune callback keeping the run's :class:`SearchStatus` current after every trial.

    Writes ``RUN_DIR/live.json`` and updates the named status actor. On ``nasq resume`` Tune
    restores this callback from ``tuner.pkl``; :meth:`setup` then continues from ``live.json``.
    """

    def __init__(self, run_dir: str | Path, *, metric: str, mode: str, samples: int | None = None,
                 searcher: Any = None, fitness: Callable[[dict], Any] | None = None) -> None:
        self.run_dir = str(run_dir)
        self.metric, self.mode, self.samples = metric, mode, samples
        self.searcher = searcher
        self.fitness = fitness if fitness is not None else getattr(searcher, "fitness", None)
        self.status: SearchStatus | None = None
        self._actor: Any = None

    def __getstate__(self) -> dict:  # tuner.pkl: no actor handle, no searcher copy
        return {**self.__dict__, "_actor": None, "searcher": None, "status": None}

    def setup(self, **info) -> None:
        """Start (or continue, on resume) the status and create the status actor."""
        try:
            previous = read_live(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a broken live file is rewritten, never fatal
            logger.warning("ignoring %s: %s", Path(self.run_dir) / LIVE_FILE, exc)
            previous = None
        run = Path(self.run_dir).name
        self.status = previous or SearchStatus(run=run, metric=self.metric, mode=self.mode,
                                               samples=self.samples)
        self.status.finished = False
        self.status.driver_pid, self.status.driver_host = os.getpid(), socket.gethostname()
        self.status.population = self._population()
        self.status.write(self.run_dir)
        try:
            self._actor = create_status_actor(self.status)
        except Exception as exc:  # noqa: BLE001 - the dashboard view is optional, the search is not
            logger.warning("could not start the status actor %s: %s", status_actor_name(run), exc)
            self._actor = None

    def _population(self) -> int | None:
        """Living population: from the searcher, or (after a resume) its newest state file in the run."""
        strategy = getattr(self.searcher, "strategy", None)
        population = getattr(strategy, "population", None)
        if population is not None:
            return len(population)
        files = sorted(Path(self.run_dir).glob("nasq-searcher-state-*.json"))
        if not files:
            return None
        key = (str(files[-1]), files[-1].stat().st_mtime_ns)
        if getattr(self, "_state_key", None) != key:
            try:
                members = json.loads(files[-1].read_text())["strategy"]["population"]
                self._state_key, self._state_population = key, len(members)
            except (OSError, ValueError, KeyError, TypeError):
                return getattr(self, "_state_population", None)
        return getattr(self, "_state_population", None)

    def _record(self, trial: Any, outcome: str, objective: Any = None) -> None:
        if self.status is None:
            self.setup()
        genome = (getattr(trial, "config", None) or {}).get("genome")
        self.status.record(trial.trial_id, outcome, objective, genome, self._population())
        self._count_redraws()
        self.status.write(self.run_dir)
        shown = "-" if objective is None else f"{float(objective):.4g}"
        task = f"trial {trial.trial_id} {outcome} {self.metric}={shown} genome={short_genome(genome)}"
        self._send(task[:_MAX_TASK_NAME])

    def _count_redraws(self) -> None:
        """Over-limit genomes the evolution core redrew before evaluation (issue 7 §3 constraints)."""
        counters = getattr(getattr(self.searcher, "strategy", None), "counters", None) or {}
        self.status.redrawn = int(counters.get("infeasible_redrawn", self.status.redrawn))

    def _send(self, task_name: str, wait: bool = False) -> None:
        if self._actor is None:
            return
        try:
            ref = self._actor.update.options(name=task_name).remote(self.status.to_json())
            if wait:
                import ray

                ray.get(ref, timeout=30)
        except Exception as exc:  # noqa: BLE001 - never fail a search because the view failed
            logger.warning("status actor update failed: %s", exc)
            self._actor = None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        """Count a finished trial: done, infeasible (no fitness) or failed (no finite metric)."""
        outcome, objective = _outcome(dict(trial.last_result or {}), self.metric, self.fitness)
        self._record(trial, outcome, objective)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        """Count an errored trial as failed."""
        self._record(trial, FAILED)

    def on_experiment_end(self, trials: list, **info) -> None:
        """Mark the run finished in ``live.json`` and in the actor, then stop the actor."""
        if self.status is None:
            return
        self.status.finished = True
        self.status.population = self._population()
        self._count_redraws()
        self.status.write(self.run_dir)
        self._send(f"search finished: {self.status.summary()}"[:_MAX_TASK_NAME], wait=True)
        if self._actor is not None:
            import ray

            ray.kill(self._actor)  # it stays listed (DEAD) in the dashboard with its name and log
            self._actor = None


def with_trial_repr(train_func: Callable[[dict], Any], metric: str) -> type:
    """A Tune trainable class running ``train_func`` whose repr names trial, genome and last score.

    Same behaviour and trial name as passing ``train_func`` to Tune (it is Tune's own function
    wrapper); only the repr differs. Ray records the repr when the actor is created, so the
    dashboard shows the first trial's id and genome; when Tune reuses the actor for another
    trial the new repr is announced to Ray's log monitor (the actor's log lines name it).
    """
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(train_func)

    class TrialTrainable(base):
        _nasq_metric = metric

        def __repr__(self) -> str:
            score = (getattr(self, "_last_result", None) or {}).get(self._nasq_metric)
            genome = (getattr(self, "config", None) or {}).get("genome")
            return trial_repr(self._name, self.trial_id, genome, self._nasq_metric, score)

        def reset_config(self, new_config: dict) -> bool:
            ok = super().reset_config(new_config)
            if ok:
                announce_repr(self)
            return ok

    TrialTrainable.__name__ = TrialTrainable.__qualname__ = train_func.__name__
    return TrialTrainable


def announce_repr(actor: object) -> None:
    """Tell Ray's log monitor the actor's current repr (its prefix for the actor's next log lines)."""
    from ray._private import ray_constants

    token = f"{ray_constants.LOG_PREFIX_ACTOR_NAME}{actor!r}\n"
    for stream in (sys.stdout, sys.stderr):
        stream.write(token)
        stream.flush()
