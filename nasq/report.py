"""Reports of a search run: every trial as CSV and the best-so-far curve as PNG.

Completion order comes from ``completions.jsonl``, which the
:class:`nasq.searchers.callbacks.CompletionLog` Tune callback appends to on the driver as trials
finish (after a resume, a trial that ran again keeps its last completion). Results come from the Tune
experiment in the run directory. The best-so-far curve is the running best of the experiment's
objective (its fitness when it has one, e.g. a latency constraint, else its metric) in completion order,
the usual way evolutionary NAS runs are compared (JASQ §4, SpaceEvo §5).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from nasq.runfile import BEST_PNG, COMPLETIONS_FILE, TRIALS_CSV, read_run_file  # noqa: F401 (re-exported)
from nasq.settings import SearchSettings

logger = logging.getLogger(__name__)

# Tune's bookkeeping keys, left out of trials.csv
_TUNE_KEYS = {"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid", "hostname",
              "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "done",
              "date", "trial_id", "experiment_tag", "should_checkpoint"}


def read_completions(run_dir: str | Path, key: str = "time") -> dict[str, float | str]:
    """trial id -> ``key`` ("time" or "status") of its last completion (torn lines from a kill skipped)."""
    path = Path(run_dir) / COMPLETIONS_FILE
    out: dict[str, float | str] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            doc = json.loads(line)
            out[str(doc["trial_id"])] = float(doc["time"]) if key == "time" else str(doc[key])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out


def load_trials(run_dir: str | Path, settings: SearchSettings | None = None) -> pd.DataFrame:
    """One row per trial of the run: order, trial id, status, genome, metrics and objective.

    ``order`` is the 1-based completion order (empty for trials that never finished);
    ``settings`` are the run's (read from its run file when None).
    """
    from nasq.run_checks import experiment_analysis

    run_dir = Path(run_dir).expanduser().resolve()
    settings = settings if settings is not None else read_run_file(run_dir)
    exp = settings.exp
    fitness = exp.make_fitness(settings.experiment_config)
    analysis = experiment_analysis(run_dir)  # one-line CheckpointError for a missing or corrupt snapshot
    done = read_completions(run_dir)
    ended = read_completions(run_dir, "status")
    rows = []
    for trial in analysis.trials:
        result = dict(trial.last_result or {})
        status = trial.status
        if status in ("RUNNING", "PENDING") and ended.get(trial.trial_id) == "ERROR":
            status = "ERROR"  # Tune can snapshot a trial whose node died as RUNNING; the driver's log knows
        row = {"trial_id": trial.trial_id, "status": status, "genome": trial.config.get("genome")}
        row.update({k: v for k, v in result.items() if k not in _TUNE_KEYS and not k.startswith("config")
                    and not isinstance(v, (dict, list))})
        finished = trial.status == "TERMINATED" and exp.metric in result
        row["objective"] = _objective(result, exp.metric, fitness) if finished else math.nan
        row["completed_at"] = done.get(trial.trial_id, result.get("timestamp") if finished else None)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["completed_at"] = pd.to_numeric(frame["completed_at"], errors="coerce")
    frame = frame.sort_values("completed_at", na_position="last", kind="stable").reset_index(drop=True)
    order = frame["completed_at"].notna().cumsum()
    frame.insert(0, "order", order.where(frame["completed_at"].notna()).astype("Int64"))
    return frame


def _objective(result: dict, metric: str, fitness) -> float:
    try:
        value = fitness(result) if fitness is not None else result.get(metric)
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def best_so_far(frame: pd.DataFrame, mode: str) -> pd.Series:
    """Running best objective in completion order (NaN objectives are skipped)."""
    values = frame.dropna(subset=["order"]).sort_values("order")["objective"]
    best = values.cummax() if mode == "max" else values.cummin()
    return best.ffill()


def write_report(run_dir: str | Path, settings: SearchSettings | None = None) -> pd.DataFrame:
    """Write ``trials.csv`` and ``best_so_far.png`` into the run directory; return the trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir).expanduser().resolve()
    settings = settings if settings is not None else read_run_file(run_dir)
    exp = settings.exp
    frame = load_trials(run_dir, settings)
    frame.to_csv(run_dir / TRIALS_CSV, index=False)
    if frame.empty:
        return frame
    curve = best_so_far(frame, exp.mode)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(curve) + 1), curve.to_numpy(), drawstyle="steps-post")
    ax.set_xlabel("completed trials")
    ax.set_ylabel(f"best {exp.metric} so far")
    ax.set_title(f"{settings.experiment} / {settings.searcher} (P={settings.population_size}, "
                 f"S={settings.sample_size})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / BEST_PNG, dpi=100)
    plt.close(fig)
    return frame


def top_trials(frame: pd.DataFrame, mode: str, n: int = 5) -> pd.DataFrame:
    """The ``n`` best finished trials by objective."""
    done = frame.dropna(subset=["objective"])
    return done.sort_values("objective", ascending=(mode == "min")).head(n)
