"""SIGKILL the driver mid-search, then `nasq resume DIR` finishes it exactly (issue 2: resume, for real)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# The real `nasq` command, run in a child process with this interpreter.
CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
SAMPLES = 24


def _env() -> dict:
    return {**os.environ, "NASQ_RAY_DASHBOARD": "0", "NASQ_RAY_NUM_CPUS": "2", "PYTHONUNBUFFERED": "1"}


def _state(path: Path) -> dict:
    return json.loads(path.read_text())["strategy"]


def _newest_state(run_dir: Path) -> Path | None:
    files = sorted(run_dir.glob("nasq-searcher-state-*.json"))
    return files[-1] if files else None


def _wait_for_progress(run_dir: Path, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until the driver has a snapshot with some individuals and more trials completed since."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"search ended early:\n{log.read_text()[-3000:]}"
        state = _newest_state(run_dir)
        done = run_dir / "completions.jsonl"
        if state is not None and done.exists():
            try:
                births = _state(state)["counters"]["births"]
            except (json.JSONDecodeError, KeyError):
                births = 0
            if births >= 8 and len(done.read_text().splitlines()) >= 12:
                return
        time.sleep(0.2)
    pytest.fail(f"no progress to kill in {timeout}s:\n{log.read_text()[-3000:]}")


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then the rest of its process group (the local Ray it started)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_then_resume_counts_every_trial_once(tmp_path, nb201_table):
    run_dir = tmp_path / "kill"
    log = tmp_path / "search.log"
    search = [sys.executable, "-c", CLI, "search", "nb201", "--table", str(nb201_table), "--searcher",
              "tournament", "--population", "6", "--sample-size", "3", "--samples", str(SAMPLES),
              "--sim-time", "0.3", "--seed", "7", "--storage", str(tmp_path), "--name", "kill"]
    with open(log, "w") as out:
        proc = subprocess.Popen(search, stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)
        try:
            _wait_for_progress(run_dir, proc, log)
        finally:
            _kill(proc)
    assert (run_dir / "nasq-run.json").is_file()
    assert not (run_dir / "trials.csv").exists()  # the search really did not finish
    saved = _state(_newest_state(run_dir))

    resumed = subprocess.run([sys.executable, "-c", CLI, "resume", str(run_dir)], env=_env(),
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "best genome" in resumed.stdout

    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == SAMPLES and trials["trial_id"].is_unique
    assert (trials["status"] == "TERMINATED").all() and trials["val_acc"].notna().all()
    assert sorted(trials["order"]) == list(range(1, SAMPLES + 1))
    acc = dict(zip(trials["genome"], trials["val_acc"]))

    final = _state(_newest_state(run_dir))
    # the searcher continued from its snapshot: nothing proposed twice, nothing lost
    assert final["counters"]["births"] >= saved["counters"]["births"]
    counts = {k: final["counters"][k] for k in ("births", "proposed", "failed")}
    assert counts == {"births": SAMPLES, "proposed": SAMPLES, "failed": 0}
    assert final["pending"] == {} and len(final["population"]) == 6
    # trials pending at the snapshot were rerun under their own ids with the genomes the searcher chose
    by_id = dict(zip(trials["trial_id"], trials["genome"]))
    for trial_id, proposal in saved["pending"].items():
        assert by_id[trial_id] == proposal["genome"]
    # every individual of the saved population is one of the run's evaluated trials, with its score
    for ind in saved["population"]:
        assert acc[ind["genome"]] == pytest.approx(ind["score"])
    births = sorted(ind["birth"] for ind in final["population"])
    assert births[-1] == SAMPLES - 1 and len(set(births)) == len(births)

    # `nasq report` rebuilds the report files from the Tune experiment
    (run_dir / "trials.csv").unlink()
    (run_dir / "best_so_far.png").unlink()
    report = subprocess.run([sys.executable, "-c", CLI, "report", str(run_dir)], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    again = pd.read_csv(run_dir / "trials.csv")
    assert set(again["trial_id"]) == set(trials["trial_id"])
    assert (run_dir / "best_so_far.png").stat().st_size > 1000
    assert trials["val_acc"].max() == pytest.approx(again["objective"].max())
