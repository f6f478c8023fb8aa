"""Run, and resume, a genome search on Ray Tune.

The runner joins the pieces: a resolved :class:`nasq.settings.SearchSettings` (which holds its
:class:`nasq.experiments.Experiment`: space, trainable, metric), a genome searcher
(:func:`nasq.searchers.make_searcher`, tournament selection of JASQ Alg. 1 or aging evolution of
SpaceEvo §4.4) wrapped in Tune's ``ConcurrencyLimiter``, and a ``tune.Tuner``. The run directory is the
Tune experiment directory; it also holds ``nasq-run.json`` (see :mod:`nasq.runfile`) so
``resume_search`` can rebuild the same trainable and searcher, and ``trials.csv`` (see :mod:`nasq.report`).

Everything the user gave is validated by :func:`check_settings` before Ray starts or anything is
written; the run directory is created only then, and removed again when Ray or the experiment's
preparation fails before Tune's first step (only a folder this call created, holding only its files).

Tune snapshots the experiment, and with it the searcher's JSON state, every
``TUNE_GLOBAL_CHECKPOINT_S`` seconds (default here: 2), so a killed driver loses little.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nasq.errors import CheckpointError, ConfigError, NasqError, bad_state
from nasq.runfile import RUN_FILE, RUN_FORMAT, RUN_VERSION, is_run_dir, read_run_file, write_run_file
from nasq.settings import SearchSettings

if TYPE_CHECKING:
    import pandas as pd

    from nasq.experiments import Experiment
    from nasq.searchers import GenomeSearcher

logger = logging.getLogger(__name__)

CHECKPOINT_PERIOD_S = "2"
# files the runner itself may write into a new run directory before Tune's first step
_OWN_FILES = {RUN_FILE, f".{RUN_FILE}.tmp", "param_store.pt", "float_state_dict.pt", "live.json"}


def run_dir_of(settings: SearchSettings) -> Path:
    """The run directory ``storage/name`` (absolute)."""
    if not settings.name:
        raise ConfigError("the search has no name; call check_settings first")
    return Path(settings.storage).expanduser().resolve() / settings.name


def check_settings(settings: SearchSettings) -> SearchSettings:
    """Validate ``settings`` without Ray and without writing anything; fill in the default name.

    Runs the experiment settings' file checks (data, tables, checkpoints), checks the storage folder,
    the run directory and the CPUs a trial asks for, and builds the searcher once, so a bad searcher
    name, a malformed genome in ``points_to_evaluate`` or a bad data path fails before Ray starts.

    Raises:
        NasqError: a one-line user error naming the fix.
    """
    options = settings.options
    if hasattr(options, "check"):
        checked = options.check()
        if checked != options:
            settings = settings.replace(experiment_config=checked)
    settings = _named(settings)
    _check_run_dir(run_dir_of(settings))
    check_trial_cpus(settings)
    build_searcher(settings)
    return settings


def _named(settings: SearchSettings) -> SearchSettings:
    """Fill in the default run name."""
    if settings.name:
        return settings
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return settings.replace(name=f"{settings.experiment}-{settings.searcher}-{stamp}")


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a storage path through a file, an existing run and a foreign non-empty folder."""
    for parent in reversed(run_dir.parents):
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--storage {parent} is a file, not a folder; pass a folder for run "
                              "directories")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file; pick another --name")
    if is_run_dir(run_dir):
        raise ConfigError(f"{run_dir} already holds a nasq run; resume it with `nasq resume {run_dir}` "
                          "or pick another --name")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} exists and is not a nasq run; nasq will not write into it: pick "
                          "another --name or --storage")


def local_num_cpus(default: int | None = None) -> int | None:
    """CPUs of a local Ray: ``NASQ_RAY_NUM_CPUS`` when set (validated), else ``default``.

    Raises:
        ConfigError: the variable is not a whole number >= 1.
    """
    text = os.environ.get("NASQ_RAY_NUM_CPUS", "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdecimal()) or int(text) < 1:
        raise ConfigError(f"NASQ_RAY_NUM_CPUS={text!r} must be a whole number of CPUs >= 1, like 2; "
                          "fix or unset it")
    return int(text)


def trial_cpus(settings: SearchSettings) -> float:
    """CPUs one trial of ``settings`` asks Ray for."""
    return float(settings.exp.resources(settings.experiment_config).get("cpu", 1))


def check_trial_cpus(settings: SearchSettings, available: float | None = None) -> None:
    """Refuse trials that can never be scheduled (they would hang the search).

    ``available`` is the cluster's CPU count once connected; before that the local Ray's
    (``NASQ_RAY_NUM_CPUS`` or this machine's CPUs), unless the search joins a cluster.
    """
    need = trial_cpus(settings)
    joins = settings.address or os.environ.get("RAY_ADDRESS")
    if available is None:
        local = local_num_cpus(default=os.cpu_count() or 1)
        if joins or _ray_initialized():
            return  # checked against the cluster's resources right after connecting
        available, where = float(local), f"the {local} CPUs of the local Ray"
    else:
        where = f"the {available:g} CPUs of the Ray cluster"
    if need > available:
        raise ConfigError(f"a trial asks for {need:g} CPUs (--cpus-per-trial) but {where} can never run it; "
                          f"use --cpus-per-trial {min(available, 1.0):g} .. {available:g}")


def _ray_initialized() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def build_searcher(settings: SearchSettings) -> GenomeSearcher:
    """Build the genome searcher of ``settings`` (JASQ Alg. 1 / SpaceEvo §4.4 evolution)."""
    from nasq.searchers import make_searcher

    exp = settings.exp
    cfg = settings.experiment_config
    kwargs: dict[str, Any] = {"population_size": settings.population_size,
                              "sample_size": settings.sample_size}
    if settings.searcher == "aging":
        kwargs["children_per_parent"] = settings.children_per_parent
    elif settings.children_per_parent != 1:
        raise ConfigError(f"children_per_parent={settings.children_per_parent} needs --searcher aging; "
                          "use 1 with tournament or random")
    from nasq.evolution.hyper import HyperSpace

    searcher = make_searcher(settings.searcher, exp.make_space(cfg), seed=settings.seed, metric=exp.metric,
                             mode=exp.mode, fitness=exp.make_fitness(cfg), extra_config=dict(cfg),
                             constraint=exp.make_constraint(cfg),  # known before evaluation: in the core
                             points_to_evaluate=list(settings.points_to_evaluate), **kwargs)
    # nasq's own experiments search no Tune domains beside the genome: fix that now, so settings
    # that depend on the mutation kinds (children_per_parent) are checked before Ray starts
    searcher.strategy.set_hyper(HyperSpace())
    return searcher


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
        from nasq.ray_auth import prepare_join

        token = prepare_join(address)  # token auth when the cluster wants it, as `ray start` set it up
        try:
            return _dashboard_url(ray.init(address=address, log_to_driver=False))
        except (ConnectionError, ValueError, RuntimeError) as exc:
            auth = f" (joined with the token from {token})" if token else ""
            raise ConfigError(f"cannot join the Ray cluster at {address!r} ({exc}); check --address{auth}, "
                              "or leave --address out to start a local Ray") from exc
    kwargs: dict[str, Any] = {"address": "local", "log_to_driver": False}
    num_cpus = local_num_cpus(default=None)
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
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


def run_search(settings: SearchSettings, *, verbose: int = 1,
               on_connect: Callable[[str | None, Path], None] | None = None) -> Path:
    """Run a new search to completion and return its run directory.

    ``on_connect(dashboard_url, run_dir)`` is called once Ray is up (the CLI prints where to look).

    Raises:
        NasqError: invalid settings (before Ray starts and before anything is written).
    """
    settings = check_settings(settings)
    run_dir = run_dir_of(settings)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        url = connect_ray(settings.address)
        check_trial_cpus(settings, _cluster_cpus())
        settings = _prepare(settings, run_dir, resumed=False)
        write_run_file(run_dir, settings)
        if on_connect is not None:
            on_connect(url, run_dir)
        tuner = _new_tuner(settings, build_searcher(settings), run_dir, verbose)
    except BaseException:
        _remove_unstarted(run_dir, created)
        raise
    _fit(tuner)
    return _finish(settings, run_dir)


def search_in(settings: SearchSettings, run_dir: Path, *, verbose: int = 1) -> Path:
    """Run a checked search to completion in ``run_dir``, a folder another workflow made and owns (the
    SpaceEvo chain's phase 3, §4.4): Ray must be connected; nothing is removed when it fails."""
    check_trial_cpus(settings, _cluster_cpus())
    settings = _prepare(settings, run_dir, resumed=False)
    write_run_file(run_dir, settings)
    _fit(_new_tuner(settings, build_searcher(settings), run_dir, verbose))
    return _finish(settings, run_dir)


def _prepare(settings: SearchSettings, run_dir: Path, resumed: bool) -> SearchSettings:
    """Run the experiment's prepare hook; it may return settings with derived fields filled in."""
    if settings.exp.prepare is None:
        return settings
    prepared = settings.exp.prepare(settings, run_dir, resumed)
    return settings if prepared is None else prepared


def _remove_unstarted(run_dir: Path, created: bool) -> None:
    """Undo a search that failed before Tune started: remove the run directory when this process
    created it and nothing but nasq's own files are in it, else remove only nasq's own files."""
    entries = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if created and entries <= _OWN_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in entries & _OWN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if created and entries - _OWN_FILES:
        logger.warning("left %s in place: it holds files nasq did not write (%s)", run_dir,
                       sorted(entries - _OWN_FILES)[:3])


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
    check_resumable(run_dir, settings)
    if address is not None:
        settings = settings.replace(address=address)
    url = connect_ray(settings.address)
    check_trial_cpus(settings, _cluster_cpus())
    if on_connect is not None:
        on_connect(url)
    settings = _prepare(settings, run_dir, resumed=True)
    exp, cfg = settings.exp, settings.experiment_config
    from nasq.tune_snapshot import settle_lost_trials

    settle_lost_trials(run_dir, build_searcher(settings))  # a trial lost with its node counts once
    tuner = tune.Tuner.restore(str(run_dir), trainable=_with_resources(exp, cfg, exp.make_trainable(cfg)),
                               resume_unfinished=True, resume_errored=False, restart_errored=False)
    _fit(tuner)
    return _finish(settings, run_dir)


def newest_searcher_state(run_dir: Path) -> Path | None:
    """The newest searcher state file Tune saved into ``run_dir`` (names sort by session time)."""
    files = sorted(run_dir.glob("nasq-searcher-state-*.json"))
    return files[-1] if files else None


def check_resumable(run_dir: Path, settings: SearchSettings) -> None:
    """Fail with a one-line error before Tune would silently restart a run it cannot restore."""
    fix = "the search was killed before its first snapshot; start it again with `nasq search`"
    from nasq.run_checks import check_tune_snapshot

    check_tune_snapshot(run_dir)  # tuner.pkl, experiment and search-generator state, read-only
    state = newest_searcher_state(run_dir)
    if state is None:
        raise CheckpointError(bad_state(run_dir, "no nasq searcher state in it", fix))
    try:
        build_searcher(settings).restore(str(state))
    except NasqError:
        raise
    except Exception as exc:  # anything else in a state file is corruption too
        raise CheckpointError(bad_state(state, f"unreadable ({exc})", "start a new search")) from exc


def _with_resources(exp: Experiment, cfg: dict, trainable: Any) -> Any:
    from ray import tune

    return tune.with_resources(trainable, exp.resources(cfg))


def _reusable(trainable: Any) -> bool:
    """Whether Tune may reuse trial actors: function trainables, or classes with ``reset_config``."""
    from ray.tune import Trainable

    if not isinstance(trainable, type):
        return True
    return getattr(trainable, "reset_config", None) is not Trainable.reset_config


def _new_tuner(settings: SearchSettings, searcher: Any, run_dir: Path, verbose: int) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from nasq.searchers.callbacks import CompletionLog
    from nasq.searchers.status import SearchStatusCallback

    exp, cfg = settings.exp, settings.experiment_config
    callbacks = [CompletionLog(str(run_dir)), *exp.make_callbacks(cfg, run_dir)]
    callbacks.append(SearchStatusCallback(run_dir, metric=exp.metric, mode=exp.mode, samples=settings.samples,
                                          searcher=searcher))  # live.json + the dashboard's status actor
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


def _finish(settings: SearchSettings, run_dir: Path) -> Path:
    write_outputs(run_dir, settings)
    return run_dir


def write_outputs(run_dir: str | Path, settings: SearchSettings | None = None) -> "pd.DataFrame":
    """Write the run's report (trials.csv, best_so_far.png) and the experiment's own outputs.

    ``settings`` are the run's resolved settings (read from the run file when None).

    Returns:
        The trials frame of :func:`nasq.report.write_report`.
    """
    from nasq.report import write_report

    run_dir = Path(run_dir).expanduser().resolve()
    settings = settings if settings is not None else read_run_file(run_dir)
    frame = write_report(run_dir, settings)
    if settings.exp.finish is not None:
        settings.exp.finish(settings, run_dir, frame)
    return frame


__all__ = ["RUN_FILE", "RUN_FORMAT", "RUN_VERSION", "SearchSettings", "build_searcher", "check_settings",
           "check_trial_cpus", "connect_ray", "local_num_cpus", "newest_searcher_state", "read_run_file",
           "resume_search", "run_dir_of", "run_search", "write_outputs", "write_run_file"]
