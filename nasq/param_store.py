"""The weight-shared population's parameter store (JASQ Appendix 4).

All individuals of a JASQ search share one set of tensors (one per cell position,
combination, input slot and op). A trial pulls the tensors its genome uses, trains them,
and pushes back the *change* it made.

Concurrency rule: a push carries deltas ``new - pulled`` and the store adds them to its
current tensors (asynchronous SGD, as in Hogwild/parameter servers). A Ray actor runs one
method at a time, so each push is applied atomically and two trials that trained the same
tensor from the same base both land: neither overwrites the other (no lost update). Every
tensor has a version counter, incremented on each push; a push may pass the versions it
pulled and is told how many tensors moved meanwhile (staleness, logged, never refused).

Parent inheritance (issue 11; Real et al. 2019 and JASQ's "a child inherits its parent's
weights"): a push may also leave a *snapshot*, the trained tensors of its genome, kept
per key (the genome string) in a bounded LRU of ``max_snapshots``. A child then pulls with
:meth:`ParameterStore.pull_inherited`: the tensors it shares with its parent's snapshot come
from the snapshot, the rest from the global store. Its push is still ``trained - pulled``
added to the current global tensors, so the no-lost-update rule above holds unchanged.

:class:`ParameterStore` is a plain class (tests use it without Ray);
:func:`create_store_actor` / :func:`get_store_actor` wrap it as a named Ray actor and
:class:`StoreCheckpoint` is the Tune callback that saves it into the run directory.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import torch

if TYPE_CHECKING:
    import ray.actor

from nasq.errors import CheckpointError, ConfigError, bad_state, check_state_header

logger = logging.getLogger(__name__)

STORE_FORMAT = "nasq.param_store"
STORE_VERSION = 1
STORE_FILE = "param_store.pt"
# Handles of store actors this process created: a non-detached Ray actor dies when its
# last handle goes, so the creating driver keeps one until the experiment ends.
_HANDLES: dict[str, object] = {}


class ParameterStore:
    """Named float tensors with version counters; pushes are additive deltas."""

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None, max_snapshots: int = 64) -> None:
        tensors = tensors or {}
        if int(max_snapshots) < 0:
            raise ConfigError(f"max_snapshots={max_snapshots} must be >= 0 (0 keeps no parent snapshots)")
        self.tensors: dict[str, torch.Tensor] = {k: v.detach().clone().float() for k, v in tensors.items()}
        self.versions: dict[str, int] = {k: 0 for k in self.tensors}
        self.pushes = 0
        self.max_snapshots = int(max_snapshots)
        # genome key -> the tensors that trial trained (LRU order, oldest first)
        self.snapshots: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def names(self) -> list[str]:
        """Names of all stored tensors."""
        return list(self.tensors)

    def _check(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        missing = [n for n in names if n not in self.tensors]
        if missing:
            raise ConfigError(f"parameter store has no tensor {missing[0]!r} ({len(missing)} missing); "
                              "the genome's network does not match the store's supernet "
                              "(same cells/channels/combinations?)")
        return names

    def pull(self, names: Iterable[str], with_versions: bool = False):
        """Copies of the named tensors (and their versions when ``with_versions``)."""
        names = self._check(names)
        tensors = {n: self.tensors[n].clone() for n in names}
        if with_versions:
            return tensors, {n: self.versions[n] for n in names}
        return tensors

    def push(self, deltas: Mapping[str, torch.Tensor], base_versions: Mapping[str, int] | None = None,
             snapshot_key: str | None = None, snapshot: Mapping[str, torch.Tensor] | None = None) -> dict:
        """Add ``deltas`` (trained minus pulled) to the stored tensors; bump their versions.

        With ``snapshot_key`` and ``snapshot`` (the trained tensors), also keep them as that
        genome's snapshot for its children (:meth:`pull_inherited`), in the same atomic call.

        Returns:
            ``{"updated": n, "stale": m}``: tensors changed, and how many of them had been
            changed by other pushes since ``base_versions`` were pulled.
        """
        names = self._check(deltas)
        for n in names:
            if tuple(deltas[n].shape) != tuple(self.tensors[n].shape):
                raise ConfigError(f"delta for {n!r} has shape {tuple(deltas[n].shape)}, "
                                  f"store holds {tuple(self.tensors[n].shape)}")
        stale = 0 if base_versions is None else sum(self.versions[n] != base_versions.get(n) for n in names)
        for n in names:
            self.tensors[n].add_(deltas[n].to(self.tensors[n].dtype))
            self.versions[n] += 1
        self.pushes += 1
        if snapshot_key is not None and snapshot is not None:
            self.keep_snapshot(snapshot_key, snapshot)
        if stale:
            logger.debug("push %d: %d of %d tensors changed since pulled", self.pushes, stale, len(names))
        return {"updated": len(names), "stale": stale}

    def keep_snapshot(self, key: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keep copies of ``tensors`` as genome ``key``'s snapshot; evict the least recently used."""
        if self.max_snapshots == 0:
            return
        names = self._check(tensors)
        self.snapshots.pop(key, None)
        self.snapshots[key] = {n: tensors[n].detach().clone().float() for n in names}
        while len(self.snapshots) > self.max_snapshots:
            self.snapshots.popitem(last=False)

    def nearest_snapshot(self, names: Iterable[str]) -> str | None:
        """Key of the snapshot whose tensor names differ least from ``names`` (newest on ties).

        The fallback parent when a trial does not know its parent: a tournament child is one
        mutation from its parent, so the parent's tensor set is among the closest.
        """
        want = set(names)
        best, best_diff = None, None
        for key in reversed(self.snapshots):
            diff = len(want.symmetric_difference(self.snapshots[key]))
            if best_diff is None or diff < best_diff:
                best, best_diff = key, diff
        return best

    def pull_inherited(self, names: Iterable[str], parent: str | None, nearest: bool = False) -> dict:
        """Pull ``names`` starting from ``parent``'s snapshot where it has them (issue 11).

        With ``parent=None`` and ``nearest``, the parent is :meth:`nearest_snapshot`.

        Returns:
            ``{"tensors", "versions", "inherited", "parent"}``: copies of the tensors (the parent's
            for the names its snapshot holds with the same shape, the global store's for the rest),
            the global versions (for the push's staleness count), the names taken from the parent
            and the parent's key. An unknown or evicted ``parent`` inherits nothing.
        """
        names = self._check(names)
        tensors, versions = self.pull(names, with_versions=True)
        if parent is None and nearest:
            parent = self.nearest_snapshot(names)
        snap = self.snapshots.get(parent) if parent is not None else None
        inherited: list[str] = []
        if snap is not None:
            self.snapshots.move_to_end(parent)
            for n in tensors:
                if n in snap and snap[n].shape == tensors[n].shape:
                    tensors[n] = snap[n].clone()
                    inherited.append(n)
        return {"tensors": tensors, "versions": versions, "inherited": inherited, "parent": parent}

    def state_dict(self) -> dict:
        """Versioned document of tensors, versions and push count (loadable with ``weights_only``)."""
        return {"format": STORE_FORMAT, "version": STORE_VERSION, "tensors": dict(self.tensors),
                "versions": dict(self.versions), "pushes": self.pushes, "max_snapshots": self.max_snapshots,
                "snapshot_keys": list(self.snapshots), "snapshots": [dict(v) for v in self.snapshots.values()]}

    def load_state_dict(self, state: object, source: object = "state") -> None:
        """Restore from :meth:`state_dict`; ``CheckpointError`` for foreign or corrupt state."""
        fix = "point at a param_store.pt written by nasq, or delete it to start from fresh weights"
        state = check_state_header(state, STORE_FORMAT, STORE_VERSION, source, "parameter store", fix)
        tensors, versions = state.get("tensors"), state.get("versions")
        if not isinstance(tensors, dict) or not isinstance(versions, dict) or set(tensors) != set(versions):
            raise CheckpointError(bad_state(source, "tensors and versions do not match", fix))
        self.tensors = {str(k): v.clone() for k, v in tensors.items()}
        self.versions = {str(k): int(v) for k, v in versions.items()}
        self.pushes = int(state.get("pushes", 0))
        self.max_snapshots = int(state.get("max_snapshots", self.max_snapshots))
        keys, snaps = state.get("snapshot_keys", []), state.get("snapshots", [])
        if not isinstance(keys, list) or not isinstance(snaps, list) or len(keys) != len(snaps):
            raise CheckpointError(bad_state(source, "snapshot keys and snapshots do not match", fix))
        self.snapshots = OrderedDict((str(k), {str(n): t.clone() for n, t in v.items()})
                                     for k, v in zip(keys, snaps))

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` with ``torch.save`` to a temp file, then ``os.replace``."""
        save_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "ParameterStore":
        """Read a store written by :meth:`save` (``torch.load(weights_only=True)``)."""
        store = cls()
        store.load_state_dict(load_state(path), path)
        return store


def save_state(state: dict, path: str | Path) -> None:
    """Atomically ``torch.save`` a store state to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".param-store-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state(path: str | Path) -> object:
    """``torch.load(weights_only=True)`` with a ``CheckpointError`` naming the fix."""
    fix = "delete it to start from fresh weights, or resume another run"
    if not Path(path).is_file():
        raise CheckpointError(bad_state(path, "file not found", fix))
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle errors, truncated zip, foreign objects
        raise CheckpointError(bad_state(path, f"unreadable ({type(exc).__name__}: {exc})", fix)) from exc


# -- Ray actor wrapper -----------------------------------------------------------------------
def store_actor_name(run_name: str) -> str:
    """Name of the store actor of a run."""
    return f"nasq-param-store-{run_name}"


def create_store_actor(name: str, store: ParameterStore) -> "ray.actor.ActorHandle":
    """Start the named store actor holding ``store``'s state, replacing one of that name.

    The actor asks for no CPU (it must not take a trial's slot) and runs one call at a
    time, which is what makes pushes atomic.
    """
    import ray

    _kill_actor(name)
    actor_cls = ray.remote(num_cpus=0, max_concurrency=1)(ParameterStore)
    handle = actor_cls.options(name=name).remote()
    ray.get(handle.load_state_dict.remote(store.state_dict(), name))
    _HANDLES[name] = handle
    return handle


def _kill_actor(name: str, wait_s: float = 30.0) -> None:
    """Kill the named actor if it runs, and wait (bounded) until its name is free."""
    import time

    import ray

    _HANDLES.pop(name, None)
    try:
        ray.kill(ray.get_actor(name))
    except ValueError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.1)
    logger.warning("parameter store actor %s still registered after %.0f s", name, wait_s)


def get_store_actor(name: str) -> "ray.actor.ActorHandle":
    """Handle of a running store actor; ``ConfigError`` if none is running under ``name``."""
    import ray

    try:
        return ray.get_actor(name)
    except ValueError as exc:
        raise ConfigError(f"no parameter store actor {name!r} is running; start the search with "
                          "`nasq search jasq` (its prepare step creates the store)") from exc


try:  # the callback needs Ray Tune; the plain store above does not
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - Ray is a hard dependency of nasq
    _TuneCallback = object


class StoreCheckpoint(_TuneCallback):
    """Tune callback saving the store actor's state to ``RUN_DIR/param_store.pt``.

    Saves when a trial completes or checkpoints and at the end of the experiment (then
    stops the actor), so ``nasq resume`` restarts from the shared weights as they were.
    """

    def __init__(self, actor_name: str, path: str) -> None:
        self.actor_name, self.path = actor_name, str(path)

    def _save(self) -> None:
        import ray

        try:
            handle = ray.get_actor(self.actor_name)
        except ValueError:
            logger.warning("parameter store %s is gone; not saved", self.actor_name)
            return
        save_state(ray.get(handle.state_dict.remote()), self.path)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """Save after every finished trial (its push has landed)."""
        self._save()

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        """Save alongside trial checkpoints."""
        self._save()

    def on_experiment_end(self, trials: list, **info) -> None:
        """Save the final state and stop the actor."""
        self._save()
        _kill_actor(self.actor_name)
