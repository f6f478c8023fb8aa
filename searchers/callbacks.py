"""Driver-side Ray Tune callbacks of a nasq search (adapter layer; the core imports no Ray).

:class:`CompletionLog` appends one line per finished trial to ``RUN_DIR/completions.jsonl`` so the
report (:mod:`nasq.report`) knows the completion order, also across a resume.
"""

from __future__ import annotations

import json
import time
from typing import Any
from pathlib import Path

from ray.tune import Callback

from nasq.runfile import COMPLETIONS_FILE


class CompletionLog(Callback):
    """Tune callback appending ``{"trial_id", "status", "time"}`` to the run's completion log."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def _append(self, trial, status: str) -> None:
        line = json.dumps({"trial_id": trial.trial_id, "status": status, "time": time.time()})
        with open(Path(self.run_dir) / COMPLETIONS_FILE, "a") as f:
            f.write(line + "\n")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Record a finished trial."""
        self._append(trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Record an errored trial."""
        self._append(trial, "ERROR")


__all__ = ["CompletionLog"]
