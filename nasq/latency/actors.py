"""The latency predictor served by named Ray actors, one per device/engine (SpaceEvo Sec. 4 at search time).

A search queries block latencies thousands of times from many trials; one named actor per engine and
device fingerprint (``nasq-latency-<engine>-<fingerprint id>``) holds the predictor so trainables and
searchers find it by name (:func:`get_predictor`) instead of each loading the file. The actor only wraps
the plain :class:`~nasq.latency.predictor.LatencyPredictor`: every answer carries the predictor file's
version, and a restarted actor (``max_restarts``) reloads the same file in its constructor.
:class:`LatencyPredictorPool` spreads batches over several replicas with ``ray.util.ActorPool``.

The actors reserve no CPU (``num_cpus=0``): a prediction costs microseconds, and a reserved CPU would take
a trial slot away on a small machine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nasq.errors import ConfigError
from nasq.latency.predictor import LatencyPredictor, SpecLike, as_specs

log = logging.getLogger(__name__)

NAMESPACE = "nasq"
MAX_RESTARTS = 3
#: Handles of the actors this process started: a non-detached named actor lives while a handle does.
_STARTED: dict[str, Any] = {}


class PredictorServer:
    """Ray-free body of the actor: loads the predictor file and answers batched queries."""

    def __init__(self, path: str, allow_foreign: bool = False) -> None:
        self.path = str(path)
        self.predictor = LatencyPredictor.load(path, allow_foreign=allow_foreign)

    def predict(self, items: Sequence[SpecLike]) -> dict[str, Any]:
        """Block latencies (ms) of a batch of BlockSpecs or keys, with the predictor's version."""
        return {"latency_ms": self.predictor.predict(list(items)).tolist(), "version": self.predictor.version}

    def predict_in_chain(self, items: Sequence[SpecLike]) -> dict[str, Any]:
        """In-chain block latencies (ms, :meth:`LatencyPredictor.predict_in_chain`), with the version."""
        return {"latency_ms": self.predictor.predict_in_chain(list(items)).tolist(),
                "version": self.predictor.version}

    def predict_models(self, chains: Sequence[Sequence[SpecLike]]) -> dict[str, Any]:
        """Whole-chain latencies (ms) of a batch of chains, with the predictor's version."""
        return {"latency_ms": [self.predictor.predict_model(c) for c in chains],
                "version": self.predictor.version}

    def info(self) -> dict[str, Any]:
        """Engine, version, file, fingerprint id, process id and whether Ray restarted this actor."""
        p = self.predictor
        return {"engine": p.engine, "version": p.version, "path": self.path, "pid": os.getpid(),
                "fingerprint_id": p.fingerprint.get("fingerprint_id"), "table_size": len(p.table),
                "restarted": _was_restarted()}


def _was_restarted() -> bool:
    import ray

    if not ray.is_initialized():
        return False
    ctx = ray.get_runtime_context()
    return bool(ctx.get_actor_id() and ctx.was_current_actor_reconstructed)


def actor_name(engine: str, fingerprint: dict) -> str:
    """Name of the predictor actor for ``engine`` on the device of ``fingerprint``."""
    from nasq.latency.fingerprint import fingerprint_id

    return f"nasq-latency-{engine}-{fingerprint_id(fingerprint)[:8]}"


def _remote_class():
    import ray

    return ray.remote(num_cpus=0, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(PredictorServer)


def start_predictor(path: str | Path, *, allow_foreign: bool = False, name: str | None = None,
                    detached: bool = False):
    """Start (or find, if running) the named predictor actor for the file at ``path``.

    Args:
        path: predictor JSON file (its fingerprint must match this machine unless ``allow_foreign``).
        allow_foreign: serve a file measured on another device.
        name: actor name; default :func:`actor_name` of the file's engine and fingerprint.
        detached: keep the actor alive after this driver exits.

    Returns:
        The actor handle; ``ray.get(handle.predict.remote(keys))`` -> ``{"latency_ms", "version"}``.
    """
    import ray

    if not ray.is_initialized():
        raise ConfigError("the latency predictor actor needs Ray; call ray.init() first")
    pred = LatencyPredictor.load(path, allow_foreign=allow_foreign)  # fail here, not in the actor
    name = name or actor_name(pred.engine, pred.fingerprint)
    opts = {"name": name, "namespace": NAMESPACE, "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    handle = _remote_class().options(**opts).remote(str(Path(path).resolve()), allow_foreign)
    return _STARTED.setdefault(name, handle)  # keep the owning handle: the actor lives while it does


def stop_predictor(name: str) -> bool:
    """Kill a predictor actor started by this process (no restart); return whether one was running."""
    import ray

    handle = _STARTED.pop(name, None)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


def get_predictor(engine: str = "ort-int8", *, threads: int = 1, name: str | None = None):
    """Find the running predictor actor of ``engine`` on this device by name (for trainables, searchers).

    Raises:
        ConfigError: no such actor is running, naming how to start one.
    """
    import ray

    from nasq.latency.fingerprint import device_fingerprint

    name = name or actor_name(engine, device_fingerprint(engine, threads))
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ConfigError(f"no latency predictor actor {name!r} is running; start it with "
                          f"nasq.latency.actors.start_predictor(PATH) (build PATH with `nasq latency build "
                          f"--engine {engine}`)") from None


class LatencyPredictorPool:
    """Several predictor replicas behind ``ray.util.ActorPool`` for throughput (Sec. 4 at search time)."""

    def __init__(self, path: str | Path, replicas: int = 2, *, allow_foreign: bool = False) -> None:
        if replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {replicas}")
        pred = LatencyPredictor.load(path, allow_foreign=allow_foreign)
        base = actor_name(pred.engine, pred.fingerprint)
        self.names = [f"{base}-r{i}" for i in range(replicas)]
        self.actors = [start_predictor(path, allow_foreign=allow_foreign, name=n) for n in self.names]
        self.version = pred.version

    def predict(self, items: Sequence[SpecLike], batch_size: int = 512) -> np.ndarray:
        """Block latencies (ms), batches spread over the replicas; all answers must share one version."""
        from ray.util import ActorPool

        keys = [s.key() for s in as_specs(items)]
        batches = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
        answers = list(ActorPool(self.actors).map(lambda a, b: a.predict.remote(b), batches))
        versions = {a["version"] for a in answers}
        if versions - {self.version}:
            log.warning("predictor replicas answered with versions %s, expected %s", versions, self.version)
        return np.array([v for a in answers for v in a["latency_ms"]], dtype=np.float64)

    def shutdown(self) -> None:
        """Kill the replicas."""
        for name in self.names:
            stop_predictor(name)
