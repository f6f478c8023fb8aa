"""Live progress of a search: SearchStatus, live.json after every trial, `nasq report --watch`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from nasq.errors import CheckpointError
from nasq.status import DONE, FAILED, INFEASIBLE, LIVE_FILE, SearchStatus, read_live, short_genome, watch

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"


def test_status_counts_and_best_follow_the_mode():
    high = SearchStatus(run="r", metric="val_acc", mode="max", samples=5)
    assert high.record("a", DONE, 70.0, "g1") is True
    assert high.record("b", DONE, 60.0, "g2") is False
    assert high.record("c", DONE, math.nan, "g3") is False  # no finite objective: failed
    assert high.record("d", INFEASIBLE, None, "g4", population=2) is False
    assert high.record("e", FAILED) is False
    assert (high.done, high.failed, high.infeasible, high.population) == (2, 2, 1, 2)
    assert (high.best, high.best_genome, high.best_trial) == (70.0, "g1", "a")
    assert high.curve == [70.0] * 5
    low = SearchStatus(run="r", metric="latency_ms", mode="min")
    for trial, value in (("a", 3.0), ("b", 1.5), ("c", 2.0)):
        low.record(trial, DONE, value)
    assert low.best == 1.5 and low.curve == [3.0, 1.5, 1.5]
    line = high.summary()
    assert "5/5 trials" in line and "2 done, 2 failed, 1 infeasible" in line and "population 2" in line
    assert "best val_acc=70" in line and repr(high).startswith("SearchStatus(")


def test_live_file_round_trip_and_foreign_files(tmp_path):
    status = SearchStatus(run="r", metric="val_acc", samples=3)
    status.record("a", DONE, 91.5, "|nor_conv_3x3~0|")
    status.write(tmp_path)
    again = read_live(tmp_path)
    assert again == status and again.to_json()["summary"] == status.summary()
    (tmp_path / LIVE_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a nasq live status file"):
        read_live(tmp_path)
    assert read_live(tmp_path / "missing") is None
    assert short_genome("x" * 100, 20) == "x" * 9 + "..." + "x" * 8 and short_genome("abc") == "abc"


def test_watch_refreshes_until_the_live_file_says_finished(tmp_path):
    status = SearchStatus(run="r", metric="val_acc", samples=2)
    status.write(tmp_path)
    rounds: list[int] = []

    def refresh(run_dir: Path) -> None:  # the search finishes during the third round
        rounds.append(len(rounds))
        if len(rounds) == 3:
            status.record("a", DONE, 1.0)
            status.finished = True
            status.write(run_dir)

    lines: list[str] = []
    last = watch(tmp_path, refresh, interval_s=0.01, echo=lines.append)
    assert last.finished and last.done == 1
    assert len(rounds) == 5  # three rounds, the one that reads "finished", and a final refresh
    with pytest.raises(ValueError, match="interval"):
        watch(tmp_path, refresh, interval_s=0)


def test_watch_stops_when_the_driver_died(tmp_path):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    status = SearchStatus(run="r", metric="val_acc", driver_pid=int(dead), driver_host=socket.gethostname())
    status.write(tmp_path)
    lines: list[str] = []
    last = watch(tmp_path, lambda d: None, interval_s=0.01, echo=lines.append)
    assert not last.finished and any("exited before the search finished" in line for line in lines)


def test_watch_gives_up_on_a_silent_driver_of_another_host(tmp_path):
    """A submitted job's driver runs elsewhere: when its live file stops changing, the watch ends."""
    status = SearchStatus(run="r", metric="val_acc", driver_pid=1, driver_host="another-host")
    path = status.write(tmp_path)
    lines: list[str] = []

    def finish_on_second_round(run_dir: Path) -> None:
        lines.append("round")
        if lines.count("round") == 2:
            status.finished = True
            status.write(run_dir)

    assert watch(tmp_path, finish_on_second_round, interval_s=0.01, echo=lines.append, stale_s=60).finished
    assert not any("no news" in line for line in lines)  # a fresh file is watched on
    status.finished = False
    status.write(tmp_path)
    old = time.time() - 120
    os.utime(path, (old, old))
    last = watch(tmp_path, lambda d: None, interval_s=0.01, echo=lines.append, stale_s=60)
    assert last is not None and not last.finished
    assert any("no news from the search for 60 s" in line for line in lines)


@pytest.mark.slow
@pytest.mark.ray
def test_live_file_and_watched_report_update_while_the_search_runs(nb201_table, tmp_path):
    samples = 6
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_RAY"))}
    env.update(NASQ_RAY_NUM_CPUS="1", NASQ_RAY_DASHBOARD="0")
    search = subprocess.Popen(
        [sys.executable, "-c", CLI, "search", "nb201", "--table", str(nb201_table), "--searcher", "aging",
         "--population", "4", "--sample-size", "2", "--samples", str(samples), "--concurrency", "1",
         "--sim-time", "1.2", "--storage", str(tmp_path), "--name", "live"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "live"
    watcher = None
    seen_live, seen_csv = set(), set()
    try:
        deadline = time.monotonic() + 240
        while search.poll() is None and time.monotonic() < deadline:
            status = _quiet(read_live, run_dir)
            if status is not None and not status.finished:
                seen_live.add(status.completed)
                if watcher is None:
                    watcher = subprocess.Popen([sys.executable, "-c", CLI, "report", str(run_dir), "--watch",
                                                "--interval", "0.5"], env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)
            rows = _quiet(lambda: len(pd.read_csv(run_dir / "trials.csv")))
            if rows is not None and search.poll() is None:
                seen_csv.add(rows)
            time.sleep(0.2)
        out = search.communicate(timeout=60)[0]
        assert search.returncode == 0, out[-3000:]
        assert watcher is not None, "live.json never appeared while the search ran"
        watched = watcher.communicate(timeout=120)[0]
        assert watcher.returncode == 0, watched[-3000:]  # it ended by itself when the search finished
    finally:
        for proc in (search, watcher):
            if proc is not None and proc.poll() is None:
                proc.kill()
    # live.json was rewritten after trials, before the search ended
    assert len({n for n in seen_live if 0 < n < samples}) >= 2, seen_live
    # the watcher wrote a partial trials.csv while the search still ran (the search writes it only at the end)
    assert any(0 < n < samples for n in seen_csv), seen_csv
    final = read_live(run_dir)
    assert final.finished and final.completed == samples and final.done == samples
    assert final.best == pd.read_csv(run_dir / "trials.csv")["objective"].max()
    assert len(final.curve) == samples and final.population == 4
    assert "finished" in watched and (run_dir / "best_so_far.png").is_file()


def _quiet(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a file being replaced or not there yet
        return None


def test_a_trial_recorded_again_after_a_resume_counts_once():
    status = SearchStatus(run="r", metric="val_acc", samples=3)
    status.record("a", DONE, 50.0)
    status.record("b", FAILED)
    status.record("b", DONE, 60.0)  # b ran again after the resume, and finished this time
    status.record("a", DONE, 50.0)
    assert (status.completed, status.done, status.failed) == (2, 2, 0)
    assert status.best == 60.0 and status.outcomes == {"a": DONE, "b": DONE}
