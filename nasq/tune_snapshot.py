"""Settle trials that Tune's experiment snapshot still holds as running after their node was lost.

When a node dies, Tune reports the trial running there as errored (callbacks and the searcher see the
error; nasq's completion log records ``ERROR``) but can write its last experiment snapshot with the trial
still ``RUNNING``: stopping an actor on a dead node never finishes. ``Tuner.restore(resume_unfinished=
True)`` would then run the trial again on a later ``nasq resume``, and the genome would count twice: a
failed individual in the searcher and a finished trial in ``trials.csv``. :func:`settle_lost_trials`
marks such trials ``ERROR`` in the snapshot before the restore (errored trials are kept as they are), so
every trial counts once, as it did when it was lost (JASQ §4 / SpaceEvo §4.4: a failed individual).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_UNFINISHED = ("RUNNING", "PENDING", "PAUSED")


def _errored_in_log(run_dir: Path) -> set[str]:
    from nasq.report import read_completions

    return {tid for tid, status in read_completions(run_dir, "status").items() if status == "ERROR"}


def _settle_snapshot(path: Path, errored: set[str]) -> list[str]:
    """Mark unfinished trials of one ``experiment_state-*.json`` that the log knows as errored."""
    doc = json.loads(path.read_text())
    marked = []
    for entry in doc.get("trial_data", []):
        state = json.loads(entry[0])
        if state.get("trial_id") not in errored or state.get("status") not in _UNFINISHED:
            continue
        state["status"] = "ERROR"
        meta = json.loads(entry[1])
        trial_dir = path.parent / str(state.get("relative_logdir") or "")
        for key, name in (("error_filename", "error.txt"), ("pickled_error_filename", "error.pkl")):
            if meta.get(key) in (None, "None") and (trial_dir / name).is_file():
                meta[key] = name
        entry[0], entry[1] = json.dumps(state, indent=2), json.dumps(meta)
        marked.append(str(state["trial_id"]))
    if marked:
        from nasq.runfile import atomic_write

        atomic_write(path, json.dumps(doc))
    return marked


def settle_lost_trials(run_dir: str | Path, searcher: Any | None = None) -> list[str]:
    """Mark trials lost with their node as errored in the run's Tune snapshot; return their ids.

    A trial is lost when the completion log's last word on it is ``ERROR`` while the snapshot still has
    it unfinished. When ``searcher`` (a nasq ``GenomeSearcher``) is given and its newest saved state still
    waits for such a trial (the driver died before the next snapshot), the trial is reported to it as
    failed and the state is saved again, so the searcher counts it once too.

    Args:
        run_dir: the run directory (Tune's experiment directory).
        searcher: a freshly built searcher of the run, or None to leave the searcher state alone.
    """
    run_dir = Path(run_dir)
    errored = _errored_in_log(run_dir)
    if not errored:
        return []
    marked: set[str] = set()
    for path in sorted(run_dir.glob("experiment_state-*.json")):
        marked.update(_settle_snapshot(path, errored))
    if marked:
        logger.warning("trials %s were lost with their node; kept as errored (not run again)",
                       ", ".join(sorted(marked)))
    states = sorted(run_dir.glob("nasq-searcher-state-*.json"))
    if searcher is not None and marked and states:
        searcher.restore(str(states[-1]))
        waiting = [t for t in sorted(marked) if t in searcher.strategy.pending]
        for trial_id in waiting:
            searcher.on_trial_complete(trial_id, None, error=True)
        if waiting:
            searcher.save(str(states[-1]))
    return sorted(marked)
