"""``nasq report --watch DIR``: keep a running search's report files current until it ends.

Every ``--interval`` seconds it rewrites ``trials.csv``, ``best_so_far.png`` and the experiment's
own outputs (the Pareto front CSV/PNG of JASQ and quant-policy) from the run directory, and
prints the status line the search writes to ``live.json`` after every trial (see
:mod:`nasq.status`). It stops by itself when the search has finished, or on Ctrl-C.
"""

from __future__ import annotations

import time
from pathlib import Path

from nasq.errors import ConfigError


def watch_report(run_dir: Path, interval_s: float = 5.0) -> int:
    """Refresh the report of ``run_dir`` until the search ends; 0 when it finished, 1 when its driver died.

    Raises:
        ConfigError: a non-positive interval.
        CheckpointError: ``run_dir`` is not a nasq run (no ``nasq-run.json``).
    """
    from nasq.runner import read_run_file, write_outputs
    from nasq.status import watch

    if not interval_s > 0:
        raise ConfigError(f"--interval must be > 0 seconds, got {interval_s}")
    run_dir = Path(run_dir).expanduser().resolve()
    read_run_file(run_dir)  # one-line error for a folder that is not a run

    def echo(line: str) -> None:
        print(f"nasq: {time.strftime('%H:%M:%S')} {line}", flush=True)

    status = watch(run_dir, lambda d: write_outputs(d), interval_s=interval_s, echo=echo)
    echo(f"report: {run_dir}")
    return 0 if status is None or status.finished else 1
