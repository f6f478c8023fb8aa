"""The run file ``RUN_DIR/nasq-run.json``: a versioned JSON document holding the resolved settings.

Pure (no Ray): ``nasq report``, ``nasq resume``, ``nasq train``/``export`` and ``--config`` read it. The
document is ``{"format": "nasq.run", "version": 2, "settings": SearchSettings.to_dict()}``; the
``settings`` object (or the whole file) is a valid ``--config``. Version 2 holds the typed settings of
:mod:`nasq.settings`; version 1 (nasq before typed settings: other field names, ``nasq.report``
callbacks in ``tuner.pkl``) is refused with one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nasq.errors import CheckpointError, ConfigError, bad_state
from nasq.settings import SearchSettings

RUN_FILE = "nasq-run.json"
RUN_FORMAT = "nasq.run"
RUN_VERSION = 2
COMPLETIONS_FILE = "completions.jsonl"  # one JSON line per finished trial (nasq.searchers.callbacks)
TRIALS_CSV = "trials.csv"  # the report's table of trials (nasq.report)
BEST_PNG = "best_so_far.png"  # the report's best-so-far curve (nasq.report)
RESUME_FIX = "pass the directory that `nasq search` printed (it holds nasq-run.json), or start a new search"


def run_document(settings: SearchSettings) -> dict:
    """The run file's JSON document of ``settings``."""
    return {"format": RUN_FORMAT, "version": RUN_VERSION, "settings": settings.to_dict()}


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then ``os.replace`` it into place, so a run
    file, a search snapshot or a §4.5 table file exists completely or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_run_file(run_dir: str | Path, settings: SearchSettings) -> Path:
    """Write the resolved settings to ``run_dir/nasq-run.json`` atomically (:func:`atomic_write`)."""
    path = Path(run_dir) / RUN_FILE
    atomic_write(path, json.dumps(run_document(settings), indent=2, sort_keys=True))
    return path


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a run file."""
    return (Path(path) / RUN_FILE).is_file()


def settings_of(doc: Any, source: object = RUN_FILE) -> SearchSettings:
    """The :class:`SearchSettings` of a run document; ``CheckpointError`` when malformed."""
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise CheckpointError(bad_state(source, "not a nasq run file", RESUME_FIX))
    if doc.get("version") == 1:
        raise CheckpointError(bad_state(source, "written by nasq 0.1 before typed settings (run file version 1)",
                                        "read it with that nasq release, or start a new search"))
    if doc.get("version") != RUN_VERSION:
        problem = f"run file version {doc.get('version')!r} is not {RUN_VERSION}"
        raise CheckpointError(bad_state(source, problem, "upgrade nasq"))
    data = doc.get("settings")
    if not isinstance(data, dict) or not {"experiment", "experiment_config"} <= set(data):
        raise CheckpointError(bad_state(source, "settings lack experiment/experiment_config", RESUME_FIX))
    try:
        return SearchSettings.from_dict(data, source)
    except ConfigError as exc:
        raise CheckpointError(bad_state(source, f"invalid settings ({exc})", "upgrade nasq or start anew")) \
            from exc


def read_run_file(run_dir: str | Path) -> SearchSettings:
    """Read and validate ``run_dir/nasq-run.json``.

    Raises:
        CheckpointError: the directory or file is missing, not JSON, or not a nasq run file.
    """
    path = Path(run_dir) / RUN_FILE
    if not Path(run_dir).is_dir():
        raise CheckpointError(bad_state(run_dir, "no such directory", RESUME_FIX))
    if not path.is_file():
        raise CheckpointError(bad_state(run_dir, f"no {RUN_FILE} in it, so it is not a nasq run", RESUME_FIX))
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(bad_state(path, f"not valid JSON ({exc})", RESUME_FIX)) from exc
    return settings_of(doc, path)


__all__ = ["COMPLETIONS_FILE", "RUN_FILE", "RUN_FORMAT", "RUN_VERSION", "is_run_dir", "read_run_file",
           "run_document",
           "settings_of", "write_run_file"]
