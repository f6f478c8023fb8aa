"""SpaceEvo space-search trainable: the Q-T score of one candidate space via the table and predictor actors.

Registers the ``spaceevo`` experiment (metric ``qt_score``, mode ``max``; SpaceEvo §4.2 score, §4.4 aging
evolution with two children per parent). The experiment config is :class:`nasq.settings.SpaceEvoSettings`
in dict form. The driver's ``prepare`` hook starts two named, restartable Ray actors (``max_restarts``):
the accuracy table (:class:`nasq.bkd.table.LUTServer`, name ``nasq-lut-<version>``) and the latency
predictor (:mod:`nasq.latency.actors`, name ``nasq-latency-<version>``), and puts every homogeneous space
(one block type in all stages) first in ``points_to_evaluate``. A trial asks each actor once: the
in-chain latency of every distinct block of its space, and the losses of every distinct stage setting of
its subnet sample (one batched call for all stages); both answers carry their file's version, which must
equal the version the search started with.

A trial reports ``qt_score``, per limit ``qt_part_<i>`` and ``feasible_subnets_<i>`` (distinct sampled
subnets within limit i), ``subnets``, ``lut_exact_frac`` (share of stage settings the table had exactly,
the rest estimated) and ``score_seconds``. The ``finish`` hook writes :mod:`nasq.spaceevo_report`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import ray

from nasq.bkd.table import AccuracyLUT, LUTServer
from nasq.errors import CheckpointError, ConfigError
from nasq.experiments import Experiment, register
from nasq.qt_score import qt_details
from nasq.settings import SearchSettings, SpaceEvoSettings
from nasq.spaces.spaceevo import SpaceEvoSpace, SpaceGenome, space_from_name
from nasq.spaces.spaceevo_subnet import CandidateSpace, unique_rows

if TYPE_CHECKING:  # the actor's worker imports this module: keep Ray Tune and pandas out of it
    import pandas as pd

logger = logging.getLogger(__name__)

METRIC = "qt_score"
NAMESPACE = "nasq"
MAX_RESTARTS = 3
#: Handles of the actors this driver started: a non-detached named actor lives while a handle does.
_STARTED: dict[str, Any] = {}


def settings_of(cfg: dict | SpaceEvoSettings) -> SpaceEvoSettings:
    """The typed settings (SpaceEvo §4.2, §4.4 search) of an experiment (or trial) config."""
    return cfg if isinstance(cfg, SpaceEvoSettings) else SpaceEvoSettings.from_config(cfg)


# -- the accuracy-table actor -------------------------------------------------------------------------
class LUTActor(LUTServer):
    """The §4.5 table server as a Ray actor body; ``info`` also says whether Ray restarted it."""

    def info(self) -> dict[str, Any]:
        """:meth:`LUTServer.info` plus ``restarted`` (the §4.5 actor after a restart)."""
        ctx = ray.get_runtime_context()
        return {**super().info(), "restarted": bool(ctx.was_current_actor_reconstructed)}


def lut_actor_name(version: str) -> str:
    """Name of the table actor serving the table of ``version`` (SpaceEvo §4.5 LUT)."""
    return f"nasq-lut-{version}"


def predictor_actor_name(version: str) -> str:
    """Name of the latency actor serving the predictor of ``version`` (SpaceEvo §4.3)."""
    return f"nasq-latency-{version}"


def start_lut(directory: str | Path, *, name: str | None = None, detached: bool = False) -> Any:
    """Start (or find, if running) the named, restartable table actor of ``directory`` (§4.5).

    Returns:
        The handle; ``ray.get(h.query.remote([(stage, type, rows), ...]))`` ->
        ``{"losses", "exact", "version"}``.
    """
    if not ray.is_initialized():
        raise ConfigError("the accuracy table actor needs Ray; call ray.init() first")
    table = AccuracyLUT.load(directory)  # fail here, not in the actor
    name = name or lut_actor_name(table.version)
    opts: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    remote = ray.remote(num_cpus=0, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(LUTActor)
    handle = remote.options(**opts).remote(table.path)
    # keep the first (owning) handle: a non-detached actor dies once its owner's handle is dropped, and the
    # handle get_if_exists returns for a running actor does not own it
    return _STARTED.setdefault(name, handle)


def get_actor(name: str) -> Any:
    """A running table (§4.5) or predictor (§4.3) actor by name.

    Raises:
        ConfigError: none is running under ``name``, naming how to start it.
    """
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ConfigError(f"no actor {name!r} is running in namespace {NAMESPACE!r}; start the search with "
                          "`nasq search spaceevo` (its prepare step starts the table and predictor actors)"
                          ) from None


def stop_actor(name: str) -> bool:
    """Kill a §4.5 table actor this process started (no restart); return whether one was running."""
    handle = _STARTED.pop(name, None)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


def _checked(answer: dict, expected: str | None, what: str) -> dict:
    if expected is not None and answer.get("version") != expected:
        raise CheckpointError(f"the {what} has version {answer.get('version')!r}, the search started with "
                              f"{expected!r}; restore the file or start a new search")
    return answer


# -- scoring one space --------------------------------------------------------------------------------
def lut_queries(cand: CandidateSpace, s: SpaceEvoSettings) -> list[tuple[int, str, np.ndarray]]:
    """The distinct stage settings of the space's subnet sample, per stage (one batched table call, §4.2).

    The same seeded draw as :func:`nasq.qt_score.qt_details`, so every setting it asks for is answered.
    """
    batch = cand.sample_subnets(s.qt_subnets, np.random.default_rng(s.qt_seed)).unique()
    out = []
    for i, stage in enumerate(cand.stages):
        first, _ = unique_rows(cand.stage_codes(batch, i))
        out.append((i, stage.type, cand.stage_settings(batch, i)[first]))
    return out


class PrefetchedTable:
    """The table actor's batched answer as an :class:`nasq.qt_score.AccuracyTable` (§4.5): it answers the
    exact setting rows :func:`lut_queries` asked for (those ``qt_details`` asks, in the same order)."""

    def __init__(self, answers: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]) -> None:
        self.answers = answers

    def stage_losses(self, stage: int, block_type: str, settings: np.ndarray) -> np.ndarray:
        """The prefetched losses of ``settings`` at ``stage`` (§4.5 look-up)."""
        rows, losses = self.answers[(stage, block_type)]
        if not np.array_equal(rows, settings):
            raise ConfigError(f"stage {stage} was queried for other settings than were prefetched; query the "
                              "table actor with the Q-T score's own draw (lut_queries)")
        return losses


def score_space(s: SpaceEvoSettings, genome: str, lut: Any, predictor: Any) -> dict[str, Any]:
    """Q-T score of ``genome`` with the table and predictor actors ``lut`` and ``predictor`` (§4.2)."""
    t0 = time.perf_counter()
    cand = space_of(s).candidate(genome)
    queries = lut_queries(cand, s)
    keys = cand.distinct_keys()
    lat_ref = predictor.predict_in_chain.remote(keys)
    lut_ref = lut.query.remote(queries)
    lat = _checked(ray.get(lat_ref), s.predictor_version, "latency predictor")
    ans = _checked(ray.get(lut_ref), s.lut_version, "accuracy table")
    table = PrefetchedTable({(i, t): (rows, np.asarray(v))
                             for (i, t, rows), v in zip(queries, ans["losses"])})
    res = qt_details(cand, s.constraints_ms, table, dict(zip(keys, lat["latency_ms"])),
                     n_subnets=s.qt_subnets, top_k=s.top_k, seed=s.qt_seed, variant=s.variant,
                     penalty=s.penalty)
    out: dict[str, Any] = {METRIC: res.score, "subnets": res.subnets,
                           "lut_exact_frac": sum(ans["exact"]) / max(1, sum(len(q[2]) for q in queries))}
    for i, (part, count) in enumerate(zip(res.per_limit, res.feasible)):
        out[f"qt_part_{i}"] = part
        out[f"feasible_subnets_{i}"] = count
    out["score_seconds"] = time.perf_counter() - t0
    return out


def spaceevo_trainable(config: dict) -> None:
    """Tune function trainable: report the Q-T score of the space ``config["genome"]`` (SpaceEvo §4.2)."""
    from ray import tune

    s = settings_of(config)
    tune.report(score_space(s, config["genome"], get_actor(lut_actor_name(str(s.lut_version))),
                            get_actor(predictor_actor_name(str(s.predictor_version)))))


# -- experiment hooks ---------------------------------------------------------------------------------
def space_of(cfg: dict | SpaceEvoSettings) -> SpaceEvoSpace:
    """The space of candidate spaces (§4.4; the settings' hyperspace, before :meth:`check` the table's)."""
    s = settings_of(cfg)
    name = s.hyperspace or (AccuracyLUT.load(s.lut).hyperspace_name if s.lut else "spaceevo")
    return space_from_name(name)


def homogeneous_spaces(space: SpaceEvoSpace) -> list[str]:
    """Every homogeneous space (one block type in all stages, each stage's middle window; §4.4 init)."""
    h = space.hyperspace
    windows = tuple(h.num_windows(i) // 2 for i in range(h.num_stages))
    return [space.encode(SpaceGenome((t,) * h.num_stages, windows)) for t in h.types]


def make_trainable(cfg: dict) -> Callable[[dict], None]:
    """The §4.2 scoring trainable (its actors' repr names trial, genome and score)."""
    from nasq.searchers.status import with_trial_repr

    return with_trial_repr(spaceevo_trainable, METRIC)


def resources(cfg: dict) -> dict:
    """Resources of one §4.2 scoring trial: ``cpus_per_trial`` CPUs."""
    return {"cpu": settings_of(cfg).cpus_per_trial}


def prepare(settings: SearchSettings, run_dir: Path, resumed: bool) -> SearchSettings:
    """Start the table and predictor actors (checking their versions against the run's), and on a new
    run put the homogeneous spaces first in ``points_to_evaluate`` (SpaceEvo §4.4 initial population)."""
    from nasq.latency.actors import start_predictor
    from nasq.latency.predictor import LatencyPredictor

    s = settings.options
    _checked({"version": AccuracyLUT.load(s.lut).version}, s.lut_version, f"accuracy table {s.lut}")
    _checked({"version": LatencyPredictor.load(s.predictor).version}, s.predictor_version,
             f"latency predictor {s.predictor}")
    lut = start_lut(s.lut, name=lut_actor_name(str(s.lut_version)))
    pred = start_predictor(s.predictor, name=predictor_actor_name(str(s.predictor_version)))
    _checked(ray.get(lut.info.remote()), s.lut_version, "accuracy table")
    _checked(ray.get(pred.info.remote()), s.predictor_version, "latency predictor")
    if settings.searcher != "aging" or settings.children_per_parent != 2:
        logger.warning("SpaceEvo §4.4 searches with aging evolution and two children per parent; this run "
                       "uses %s with %d", settings.searcher, settings.children_per_parent)
    if resumed:
        return settings
    space = space_of(s)
    given = [space.canonical(p) for p in settings.points_to_evaluate]
    points = given + [p for p in homogeneous_spaces(space) if p not in given]
    return settings.replace(points_to_evaluate=tuple(points))


def finish(settings: SearchSettings, run_dir: Path, trials: "pd.DataFrame") -> None:
    """Write the SpaceEvo report (§4.4, §5): Q-T curve, best space, per-stage block-type histogram."""
    from nasq.spaceevo_report import write_spaceevo_report

    write_spaceevo_report(run_dir, trials, space_of(settings.options), settings.options.constraints_ms)


register(
    Experiment(
        name="spaceevo",
        make_space=space_of,
        make_trainable=make_trainable,
        metric=METRIC,
        mode="max",
        resources=resources,
        prepare=prepare,
        finish=finish,
        settings_class=SpaceEvoSettings,
    )
)
