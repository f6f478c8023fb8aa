"""Run, and resume, a genome search on Ray Tune.

The runner joins the pieces: an :class:`nasq.experiments.Experiment` (space, trainable,
metric), a genome searcher (:func:`nasq.searchers.make_searcher`, tournament selection of
JASQ Alg. 1 or aging evolution of SpaceEvo §4.4) wrapped in Tune's ``ConcurrencyLimiter``,
and a ``tune.Tuner``. The run directory is the Tune experiment directory; it also holds
``nasq-run.json`` (the resolved :class:`SearchSettings`) so ``resume_search`` can rebuild
the same trainable and searcher, and ``trials.csv`` (see :mod:`nasq.report`).

Tune snapshots the experiment, and with it the searcher's JSON state, every
``TUNE_GLOBAL_CHECKPOINT_S`` seconds (default here: 2), so a killed driver loses little.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nasq import experiments
from nasq.errors import CheckpointError, ConfigError, NasqError, bad_state

if TYPE_CHECKING:
    import pandas as pd

    from nasq.searchers import GenomeSearcher

logger = logging.getLogger(__name__)

RUN_FILE = "nasq-run.json"
RUN_FORMAT = "nasq.run"
RUN_VERSION = 1
CHECKPOINT_PERIOD_S = "2"
_RESUME_FIX = "pass the directory that `nasq search` printed (it holds nasq-run.json), or start a new search"


@dataclass
class SearchSettings:
    """Resolved settings of one search; written to ``RUN_DIR/nasq-run.json``."""

    experiment: str                     # registered experiment name ("nb201", "jasq", ...)
    experiment_config: dict             # passed to the experiment's factories and into every trial config
    searcher: str = "tournament"        # tournament | aging | random
    population_size: int = 16           # P
    sample_size: int = 16               # S
    children_per_parent: int = 1        # aging only: 1, or 2 for SpaceEvo's two children
    samples: int = 64                   # number of trials (evaluated genomes)
    concurrency: int = 2                # trials running at once (ConcurrencyLimiter)
    seed: int | None = 0                # searcher seed
    storage: str = "runs"               # parent folder of run directories
    name: str | None = None             # run directory name (default: experiment-searcher-time)
    address: str | None = None          # Ray cluster to join (None: start a local Ray)
    points_to_evaluate: list[str] = field(default_factory=list)  # genomes evaluated first

    @classmethod
    def from_json(cls, data: Any, source: object = RUN_FILE) -> "SearchSettings":
        """Rebuild from the ``settings`` object of a run file; ``CheckpointError`` when malformed."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not {"experiment", "experiment_config"} <= set(data):
            raise CheckpointError(bad_state(source, "settings lack experiment/experiment_config",
                                            _RESUME_FIX))
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(bad_state(source, f"unknown settings {unknown}", "upgrade nasq"))
        return cls(**data)


def run_dir_of(settings: SearchSettings) -> Path:
    """The run directory ``storage/name`` (absolute)."""
    if not settings.name:
        raise ConfigError("the search has no name; call check_settings first")
    return Path(settings.storage).expanduser().resolve() / settings.name


def check_settings(settings: SearchSettings) -> SearchSettings:
    """Validate ``settings`` without Ray and fill in the default name.

    Builds the experiment's space, fitness and searcher once, so a bad searcher name, a
    malformed genome in ``points_to_evaluate``, a bad data path or a run directory that
    already holds a run fails before Ray starts.

    Raises:
        NasqError: a one-line user error naming the fix.
    """
    settings = _named(settings)
    build_searcher(settings)
    return settings


def _named(settings: SearchSettings) -> SearchSettings:
    """Check the counts and the run directory, and fill in the default run name."""
    if settings.samples < 1:
        raise ConfigError(f"samples must be >= 1, got {settings.samples}")
    if settings.concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {settings.concurrency}")
    if not settings.name:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        settings = dataclasses.replace(settings, name=f"{settings.experiment}-{settings.searcher}-{stamp}")
    run_dir = run_dir_of(settings)
    if (run_dir / RUN_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a nasq run; resume it with `nasq resume {run_dir}` "
                          "or pick another --name")
    return settings


def build_searcher(settings: SearchSettings) -> GenomeSearcher:
    """Build the genome searcher of ``settings`` (JASQ Alg. 1 / SpaceEvo §4.4 evolution)."""
    from nasq.searchers import make_searcher

    exp = experiments.get(settings.experiment)
    cfg = settings.experiment_config
    kwargs: dict[str, Any] = {"population_size": settings.population_size,
                              "sample_size": settings.sample_size}
    if settings.searcher == "aging":
        kwargs["children_per_parent"] = settings.children_per_parent
    elif settings.children_per_parent != 1:
        raise ConfigError(f"children_per_parent={settings.children_per_parent} needs --searcher aging; "
                          "use 1 with tournament or random")
    return make_searcher(settings.searcher, exp.make_space(cfg), seed=settings.seed, metric=exp.metric,
                         mode=exp.mode, fitness=exp.make_fitness(cfg), extra_config=dict(cfg),
                         points_to_evaluate=list(settings.points_to_evaluate), **kwargs)


def connect_ray(address: str | None = None) -> str | None:
    """Start a local Ray (dashboard on 127.0.0.1) or join ``address``; return the dashboard URL.

    Does nothing but return the URL when Ray is already initialised. Without ``address`` it joins
    ``RAY_ADDRESS`` when set (as under ``ray job submit``), else starts a new local Ray even when
    ``ray start`` left a cluster address on this machine. ``NASQ_RAY_DASHBOARD=0`` skips the
    dashboard and ``NASQ_RAY_NUM_CPUS`` caps a local Ray's CPUs.
    """
    import ray

    if ray.is_initialized():
        return _dashboard_url(None)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
        try:
            return _dashboard_url(ray.init(address=address, log_to_driver=False))
        except (ConnectionError, ValueError, RuntimeError) as exc:
            auth = "" if os.environ.get("RAY_AUTH_MODE") else (
                ", or set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN) if the cluster uses token authentication, "
                "as `ray start` does when ~/.ray/auth_token exists")
            raise ConfigError(f"cannot join the Ray cluster at {address!r} ({exc}); check --address{auth}, "
                              "or leave --address out to start a local Ray") from exc
    kwargs: dict[str, Any] = {"address": "local", "log_to_driver": False}
    if os.environ.get("NASQ_RAY_NUM_CPUS"):
        kwargs["num_cpus"] = int(os.environ["NASQ_RAY_NUM_CPUS"])
    if os.environ.get("NASQ_RAY_DASHBOARD", "1") in ("0", ""):
        return _dashboard_url(ray.init(include_dashboard=False, **kwargs))
    try:
        ctx = ray.init(include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
    except Exception as exc:  # dashboard dependencies missing or port trouble: run without it
        logger.warning("could not start Ray with the dashboard (%s); starting without it", exc)
        if ray.is_initialized():
            ray.shutdown()
        ctx = ray.init(include_dashboard=False, **kwargs)
    return _dashboard_url(ctx)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``[ray://]host:port`` address (Ray itself retries for minutes)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: nothing answers there ({exc}); "
                          "check --address (the head's address printed by `ray start --head`) or leave it "
                          "out to start a local Ray") from exc


def _dashboard_url(ctx: Any) -> str | None:
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if not url:
        try:
            from ray._private.worker import get_dashboard_url

            url = get_dashboard_url()
        except Exception:  # noqa: BLE001 - no dashboard is not an error
            url = None
    if url and "://" not in url:
        url = "http://" + url
    return url or None


def run_search(settings: SearchSettings, *, verbose: int = 1) -> Path:
    """Run a new search to completion and return its run directory.

    Raises:
        ConfigError: the run directory already holds a run (resume it or pick another name).
    """
    settings = _named(settings)
    searcher = build_searcher(settings)  # validates before anything is written
    run_dir = run_dir_of(settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_file(run_dir, settings)
    connect_ray(settings.address)
    exp = experiments.get(settings.experiment)
    if exp.prepare is not None:
        exp.prepare(settings.experiment_config, run_dir, False)
    tuner = _new_tuner(settings, exp, searcher, run_dir, verbose)
    _fit(tuner)
    return _finish(run_dir)


def resume_search(run_dir: str | Path, *, address: str | None = None,
                  on_connect: Callable[[str | None], None] | None = None, verbose: int = 1) -> Path:
    """Finish an interrupted search from its run directory (``Tuner.restore``).

    Unfinished trials rerun under their own trial ids; finished and errored trials are kept
    as they are (an errored genome is already a failed individual of the searcher). The
    searcher's state is restored from its newest JSON snapshot by Tune. ``address`` overrides
    the recorded cluster address (a cluster restarted elsewhere); None keeps the recorded one.
    ``on_connect(dashboard_url)`` is called once Ray is up (the CLI prints where to look).

    Raises:
        CheckpointError: missing, foreign or corrupt run file or searcher state.
    """
    from ray import tune

    run_dir = Path(run_dir).expanduser().resolve()
    settings = read_run_file(run_dir)
    exp = experiments.get(settings.experiment)
    check_resumable(run_dir, settings)
    url = connect_ray(address if address is not None else settings.address)
    if on_connect is not None:
        on_connect(url)
    if exp.prepare is not None:
        exp.prepare(settings.experiment_config, run_dir, True)
    trainable = exp.make_trainable(settings.experiment_config)
    tuner = tune.Tuner.restore(str(run_dir), trainable=_with_resources(exp, settings.experiment_config, trainable),
                               resume_unfinished=True, resume_errored=False, restart_errored=False)
    _fit(tuner)
    return _finish(run_dir)


def write_run_file(run_dir: Path, settings: SearchSettings) -> None:
    """Write the resolved settings to ``run_dir/nasq-run.json`` atomically."""
    doc = {"format": RUN_FORMAT, "version": RUN_VERSION, "settings": dataclasses.asdict(settings)}
    tmp = run_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    os.replace(tmp, run_dir / RUN_FILE)


def read_run_file(run_dir: str | Path) -> SearchSettings:
    """Read and validate ``run_dir/nasq-run.json``.

    Raises:
        CheckpointError: the directory or file is missing, not JSON, or not a nasq run file.
    """
    path = Path(run_dir) / RUN_FILE
    if not Path(run_dir).is_dir():
        raise CheckpointError(bad_state(run_dir, "no such directory", _RESUME_FIX))
    if not path.is_file():
        raise CheckpointError(bad_state(run_dir, f"no {RUN_FILE} in it, so it is not a nasq run",
                                        _RESUME_FIX))
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(bad_state(path, f"not valid JSON ({exc})", _RESUME_FIX)) from exc
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise CheckpointError(bad_state(path, "not a nasq run file", _RESUME_FIX))
    if doc.get("version") != RUN_VERSION:
        raise CheckpointError(bad_state(path, f"run file version {doc.get('version')!r} is not {RUN_VERSION}",
                                        "upgrade nasq"))
    return SearchSettings.from_json(doc.get("settings"), path)


def newest_searcher_state(run_dir: Path) -> Path | None:
    """The newest searcher state file Tune saved into ``run_dir`` (names sort by session time)."""
    files = sorted(run_dir.glob("nasq-searcher-state-*.json"))
    return files[-1] if files else None


def check_resumable(run_dir: Path, settings: SearchSettings) -> None:
    """Fail with a one-line error before Tune would silently restart a run it cannot restore."""
    fix = "the search was killed before its first snapshot; start it again with `nasq search`"
    if not (run_dir / "tuner.pkl").is_file() or not list(run_dir.glob("experiment_state-*.json")):
        raise CheckpointError(bad_state(run_dir, "no Tune experiment snapshot in it", fix))
    state = newest_searcher_state(run_dir)
    if state is None:
        raise CheckpointError(bad_state(run_dir, "no nasq searcher state in it", fix))
    try:
        build_searcher(settings).restore(str(state))
    except NasqError:
        raise
    except Exception as exc:  # anything else in a state file is corruption too
        raise CheckpointError(bad_state(state, f"unreadable ({exc})", "start a new search")) from exc


def _with_resources(exp: experiments.Experiment, cfg: dict, trainable: Any) -> Any:
    from ray import tune

    return tune.with_resources(trainable, exp.resources(cfg))


def _reusable(trainable: Any) -> bool:
    """Whether Tune may reuse trial actors: function trainables, or classes with ``reset_config``."""
    from ray.tune import Trainable

    if not isinstance(trainable, type):
        return True
    return getattr(trainable, "reset_config", None) is not Trainable.reset_config


def _new_tuner(settings: SearchSettings, exp: experiments.Experiment, searcher: Any, run_dir: Path,
               verbose: int) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from nasq.report import CompletionLog

    cfg = settings.experiment_config
    callbacks = [CompletionLog(str(run_dir)), *exp.make_callbacks(cfg, run_dir)]
    search_alg = ConcurrencyLimiter(searcher, max_concurrent=settings.concurrency)
    trainable = exp.make_trainable(cfg)
    reuse = _reusable(trainable)  # saves a worker start per trial
    return tune.Tuner(
        _with_resources(exp, cfg, trainable),
        tune_config=tune.TuneConfig(search_alg=search_alg,
                                    num_samples=settings.samples, metric=exp.metric, mode=exp.mode,
                                    trial_dirname_creator=trial_dirname, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=str(run_dir.parent), name=run_dir.name, callbacks=callbacks,
                                  verbose=verbose),
    )


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (``<trainable>_<trial id>``); the genome is in params.json."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def _fit(tuner: Any) -> Any:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", CHECKPOINT_PERIOD_S)
    return tuner.fit()


def _finish(run_dir: Path) -> Path:
    write_outputs(run_dir)
    return run_dir


def write_outputs(run_dir: str | Path) -> "pd.DataFrame":
    """Write the run's report (trials.csv, best_so_far.png) and the experiment's own outputs.

    Returns:
        The trials frame of :func:`nasq.report.write_report`.
    """
    from nasq.report import write_report

    frame = write_report(run_dir)
    settings = read_run_file(run_dir)
    exp = experiments.get(settings.experiment)
    if exp.finish is not None:
        exp.finish(settings.experiment_config, Path(run_dir))
    return frame
