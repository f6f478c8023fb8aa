"""Progress of a running search: best so far, trials done / failed / infeasible, population size.

A plain class with no Ray in it: the Tune adapter (:mod:`nasq.searchers.status`) feeds it one
finished trial at a time on the driver, mirrors it into a named Ray actor (so the dashboard
lists the search) and writes it to ``RUN_DIR/live.json`` after every trial. The best-so-far
curve is the running best of the objective in completion order, as evolutionary NAS runs are
compared (JASQ §4, SpaceEvo §5). Also holds the short repr that trainable actors show in the
Ray dashboard (:func:`trial_repr`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nasq.errors import CheckpointError, bad_state

LIVE_FILE = "live.json"
LIVE_FORMAT = "nasq.live"
LIVE_VERSION = 1
DONE, FAILED, INFEASIBLE = "done", "failed", "infeasible"
NAMESPACE = "nasq"  # Ray namespace of the status actors


def status_actor_name(run_name: str) -> str:
    """Name of the status actor of a run (in Ray namespace :data:`NAMESPACE`)."""
    return f"nasq-status-{run_name}"


def short_genome(genome: object, width: int = 40) -> str:
    """``genome`` as a string of at most ``width`` characters (middle elided with ``...``)."""
    text = "" if genome is None else str(genome)
    if len(text) <= width:
        return text
    keep = max(width - 3, 2)
    return text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2:]


def trial_repr(kind: str, trial_id: object, genome: object, metric: str, score: object,
               width: int = 96) -> str:
    """Repr of a trainable actor, as the Ray dashboard lists it: trial id, short genome, last score."""
    shown = "-" if score is None else (f"{score:.4g}" if isinstance(score, float) else str(score))
    return f"{kind}(trial={trial_id}, genome={short_genome(genome, width)}, {metric}={shown})"


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, non-numeric, NaN or infinite)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass
class SearchStatus:
    """Counts and best-so-far of one search run (updated on the driver after every trial).

    ``done`` counts trials that produced an objective, ``failed`` trials that errored or reported
    no finite metric, ``infeasible`` trials whose result broke a hard constraint (no fitness);
    ``population`` is the searcher's living population (None when unknown).
    """

    run: str                                   # run name (the run directory's name)
    metric: str                                # the objective's name, e.g. "val_acc"
    mode: str = "max"                          # "max" or "min"
    samples: int | None = None                 # trials the search will run in all
    done: int = 0                              # trials with an objective
    failed: int = 0                            # errored / no finite metric
    infeasible: int = 0                        # over a hard constraint
    redrawn: int = 0                           # over-limit genomes redrawn before evaluation (core constraint)
    population: int | None = None              # living population size
    best: float | None = None                  # best objective so far
    best_genome: str | None = None             # its genome
    best_trial: str | None = None              # its trial id
    curve: list[float] = field(default_factory=list)  # running best after each completed trial
    last_trial: str | None = None              # the trial recorded last
    finished: bool = False                     # the search has ended
    updated: float = 0.0                       # time.time() of the last update
    driver_pid: int | None = None              # process id of the search's driver
    outcomes: dict[str, str] = field(default_factory=dict)  # trial id -> its last outcome (counted once)
    driver_host: str | None = None             # host name of the search's driver

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    @property
    def completed(self) -> int:
        """Trials recorded so far (done + failed + infeasible)."""
        return self.done + self.failed + self.infeasible

    def record(self, trial_id: str, outcome: str, objective: Any = None, genome: str | None = None,
               population: int | None = None) -> bool:
        """Count one finished trial; return whether it is the new best.

        ``outcome`` is :data:`DONE`, :data:`FAILED` or :data:`INFEASIBLE`; a ``DONE`` trial without
        a finite objective counts as failed (as the searchers treat it, JASQ Alg. 1).
        """
        if outcome not in (DONE, FAILED, INFEASIBLE):
            raise ValueError(f"outcome must be one of {DONE!r}, {FAILED!r}, {INFEASIBLE!r}; got {outcome!r}")
        value = finite_or_none(objective) if outcome == DONE else None
        improved = False
        if outcome == DONE and value is None:
            outcome = FAILED
        again = trial_id in self.outcomes  # rerun after a resume (Tune's snapshot lagged): count it once
        if again:
            previous = self.outcomes[trial_id]
            setattr(self, previous, getattr(self, previous) - 1)
        self.outcomes[trial_id] = outcome
        if outcome == DONE:
            self.done += 1
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            if better:
                self.best, self.best_genome, self.best_trial, improved = value, genome, trial_id, True
        elif outcome == FAILED:
            self.failed += 1
        else:
            self.infeasible += 1
        if self.best is not None:
            if again and self.curve:
                self.curve[-1] = self.best
            else:
                self.curve.append(self.best)
        if population is not None:
            self.population = int(population)
        self.last_trial, self.updated = trial_id, time.time()
        return improved

    def summary(self) -> str:
        """One line: best so far and the counts (the status actor's log and repr, ``--watch``)."""
        best = "-" if self.best is None else f"{self.best:.4g}"
        total = f"/{self.samples}" if self.samples else ""
        pop = "?" if self.population is None else str(self.population)
        state = "finished" if self.finished else "running"
        counts = f"{self.done} done, {self.failed} failed, {self.infeasible} infeasible"
        if self.redrawn:
            counts += f"; {self.redrawn} over the limit redrawn before evaluation"
        return (f"{self.run}: {state}, {self.completed}{total} trials ({counts}), population {pop}, "
                f"best {self.metric}={best}"
                + (f" ({short_genome(self.best_genome)})" if self.best_genome else ""))

    def __repr__(self) -> str:
        return f"SearchStatus({self.summary()})"

    def to_json(self) -> dict:
        """The versioned JSON document of ``live.json``."""
        return {"format": LIVE_FORMAT, "version": LIVE_VERSION, "summary": self.summary(), **asdict(self)}

    @classmethod
    def from_json(cls, doc: Any, source: object = LIVE_FILE) -> "SearchStatus":
        """Rebuild from :meth:`to_json`; ``CheckpointError`` when it is not such a document."""
        fix = "delete it; the search rewrites it after its next trial"
        header = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else None
        if header != (LIVE_FORMAT, LIVE_VERSION):
            raise CheckpointError(bad_state(source, "not a nasq live status file", fix))
        names = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in doc.items() if k in names})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(bad_state(source, f"malformed ({exc})", fix)) from exc

    def write(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/live.json`` atomically (temp file, then ``os.replace``)."""
        path = Path(run_dir) / LIVE_FILE
        tmp = path.with_name(f".{LIVE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)
        return path


def read_live(run_dir: str | Path) -> SearchStatus | None:
    """The status in ``run_dir/live.json``, or None when the run has none (yet)."""
    path = Path(run_dir) / LIVE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(bad_state(path, f"unreadable ({exc})", "delete it")) from exc
    return SearchStatus.from_json(doc, path)


def _driver_alive(status: SearchStatus) -> bool | None:
    """Whether the driver writing ``status`` runs; None when it is not on this host (unknown)."""
    import socket

    if status.driver_pid is None or status.driver_host != socket.gethostname():
        return None
    try:
        os.kill(int(status.driver_pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds the pid: alive
        return True
    return True


def driver_gone(status: SearchStatus) -> bool:
    """Whether the driver that writes ``status`` ran on this host and has exited."""
    return _driver_alive(status) is False


def watch(run_dir: str | Path, refresh: Callable[[Path], Any], interval_s: float = 5.0,
          echo: Callable[[str], None] = lambda line: None, settle_s: float = 60.0,
          stale_s: float = 3600.0) -> SearchStatus | None:
    """Call ``refresh(run_dir)`` every ``interval_s`` seconds until the run in ``run_dir`` ends.

    The run has ended when its ``live.json`` says so (then, once its driver has exited, bounded
    by ``settle_s``, one last refresh sees the final state) or when its driver exited without
    finishing. A driver on another host (a submitted Ray Job) cannot be checked: the watch ends when
    its ``live.json`` has not changed for ``stale_s`` seconds. A run that finished before live files
    existed is refreshed once. ``echo`` gets
    one status line per round. Ctrl-C (``KeyboardInterrupt``) stops the loop as usual.

    Returns:
        The last status read, or None for a run without ``live.json``.
    """
    run_dir = Path(run_dir)
    if interval_s <= 0:
        raise ValueError(f"the watch interval must be > 0 seconds, got {interval_s}")
    legacy = not (run_dir / LIVE_FILE).exists() and (run_dir / "trials.csv").exists()
    shown_error = ""
    while True:
        status = None if legacy else _read_quietly(run_dir)
        try:
            refresh(run_dir)
        except Exception as exc:  # noqa: BLE001 - a run being written can be briefly unreadable
            if str(exc) != shown_error:
                echo(f"report not refreshed yet: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
                shown_error = str(exc)
        if legacy:
            echo("no live status in this run (it finished before live files existed); report refreshed once")
            return None
        echo(status.summary() if status else "waiting for the search's first live status")
        if status is not None and _driver_alive(status) is None and _age_s(run_dir / LIVE_FILE) > stale_s:
            echo(f"no news from the search for {stale_s:.0f} s and its driver runs on another host "
                 f"({status.driver_host}); stopped watching (run `nasq report --watch` again to go on)")
            return status
        if status is not None and (status.finished or driver_gone(status)):
            if not status.finished:
                echo(f"the search's driver (pid {status.driver_pid}) exited before the search finished")
            deadline = time.monotonic() + settle_s
            while _driver_alive(status) and time.monotonic() < deadline:
                time.sleep(min(interval_s, 1.0))
            refresh(run_dir)
            return status
        time.sleep(interval_s)


def _age_s(path: Path) -> float:
    """Seconds since ``path`` was last written (0 when it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _read_quietly(run_dir: Path) -> SearchStatus | None:
    try:
        return read_live(run_dir)
    except CheckpointError:
        return None
