"""Checks of the Tune files in a run directory, made before Ray starts or Tune reads them.

``nasq resume`` and ``nasq report`` read a run directory that a killed, crashed or half-copied
search may have left behind. Tune itself answers a missing or truncated file with a traceback
(and, on restore, only after it has started Ray and rewritten part of the folder), so every file
Tune will read is checked here first, read-only, and a problem becomes one
:class:`~nasq.errors.CheckpointError` line that names the file and the fix.

Files of a Tune experiment directory (Ray 2.x): ``tuner.pkl`` (the pickled tuner settings),
``experiment_state-<time>.json`` (trials; Tune reads the newest name) and
``search_gen_state-<time>.json`` (the pickled search algorithm wrappers; newest name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nasq.errors import CheckpointError, bad_state

TUNER_FILE = "tuner.pkl"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
SEARCH_GEN_STATE_GLOB = "search_gen_state-*.json"
NO_SNAPSHOT_FIX = ("the search stopped before Tune's first snapshot, so no trial was recorded; remove the "
                   "folder and start the search again with `nasq search`")
CORRUPT_FIX = "the file is truncated or corrupt; restore it from a copy of the run, or start a new search"


def newest(run_dir: str | Path, pattern: str) -> Path | None:
    """The file matching ``pattern`` with the largest name (Tune's names end in a sortable time stamp)."""
    files = sorted(Path(run_dir).glob(pattern))
    return files[-1] if files else None


def check_experiment_state(run_dir: str | Path) -> Path:
    """Check that the newest ``experiment_state-*.json`` exists and is a Tune experiment state.

    Returns:
        Its path.

    Raises:
        CheckpointError: no snapshot at all, or the newest one is not valid JSON of trials.
    """
    path = newest(run_dir, EXPERIMENT_STATE_GLOB)
    if path is None:
        raise CheckpointError(bad_state(run_dir, "no Tune experiment snapshot (experiment_state-*.json) "
                                        "in it", NO_SNAPSHOT_FIX))
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(bad_state(path, f"not valid JSON ({_short(exc)})", CORRUPT_FIX)) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("trial_data"), list) or "runner_data" not in doc:
        raise CheckpointError(bad_state(path, "not a Tune experiment state (no trial_data/runner_data)",
                                        CORRUPT_FIX))
    return path


def _load_pickle(path: Path, what: str) -> Any:
    """Unpickle a Tune state file the way Tune does (``ray.cloudpickle``); it must hold a dict."""
    import ray.cloudpickle as cloudpickle

    try:
        obj = cloudpickle.loads(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(bad_state(path, f"unreadable {what} ({type(exc).__name__}: {_short(exc)})",
                                        CORRUPT_FIX)) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(bad_state(path, f"not a Tune {what} (holds a {type(obj).__name__})",
                                        CORRUPT_FIX))
    return obj


def check_tune_snapshot(run_dir: str | Path) -> None:
    """Check every Tune file ``Tuner.restore`` reads: tuner.pkl, experiment state, search generator state.

    Raises:
        CheckpointError: a file is missing, truncated or foreign (one line naming it and the fix).
    """
    run_dir = Path(run_dir)
    tuner = run_dir / TUNER_FILE
    if not tuner.is_file():
        raise CheckpointError(bad_state(run_dir, f"no Tune {TUNER_FILE} in it", NO_SNAPSHOT_FIX))
    check_experiment_state(run_dir)
    _load_pickle(tuner, "tuner state")
    gen = newest(run_dir, SEARCH_GEN_STATE_GLOB)
    if gen is not None:
        _load_pickle(gen, "search algorithm state")


def experiment_analysis(run_dir: str | Path) -> Any:
    """Tune's ``ExperimentAnalysis`` of a run directory, after :func:`check_experiment_state`.

    Raises:
        CheckpointError: no or a corrupt experiment snapshot (one line instead of Tune's traceback).
    """
    from ray.tune import ExperimentAnalysis

    path = check_experiment_state(run_dir)
    try:
        return ExperimentAnalysis(str(run_dir))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise CheckpointError(bad_state(path, f"Tune cannot read it ({type(exc).__name__}: {_short(exc)})",
                                        CORRUPT_FIX)) from exc


def _short(exc: BaseException, limit: int = 120) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
