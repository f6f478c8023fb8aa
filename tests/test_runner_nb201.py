"""run_search in-process on the shared Ray: resolved settings, report files, latency constraint, and the
run file as a --config for the next search."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
import yaml

from nasq import runner
from nasq.errors import ConfigError
from nasq.nb201_table import NB201Table

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_latency_constrained_search_never_keeps_slow_cells(ray_session, nb201_table, tmp_path):
    latency = nb201_table.parent / "nb201_latency_help_24dev.csv"
    table = NB201Table(nb201_table, latency_path=latency, latency_column="lat_ms_raspi4")
    limit = float(pd.Series(list(table.latency.values())).median())
    # "after": slow cells are evaluated, then counted as failed individuals (the post-evaluation path)
    cfg = {"table": str(nb201_table), "latency_table": str(latency), "latency_column": "lat_ms_raspi4",
           "max_latency_ms": limit, "constraint_mode": "after"}
    settings = runner.SearchSettings("nb201", cfg, searcher="aging", population_size=4, sample_size=2,
                                     samples=10, seed=5, storage=str(tmp_path), name="lat")
    run_dir = runner.run_search(settings, verbose=0)

    doc = json.loads((run_dir / runner.RUN_FILE).read_text())
    assert doc["format"] == runner.RUN_FORMAT
    assert runner.read_run_file(run_dir) == settings
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 10 and trials["latency_ms"].notna().all()
    assert (trials["feasible"] == (trials["latency_ms"] <= limit)).all()
    assert trials.loc[~trials["feasible"], "objective"].isna().all()  # infeasible: no fitness
    assert (run_dir / "best_so_far.png").is_file()

    state = json.loads(runner.newest_searcher_state(run_dir).read_text())["strategy"]
    slow = set(trials.loc[~trials["feasible"], "genome"])
    assert slow, "the limit should make some sampled cells infeasible"
    assert state["counters"]["failed"] == len(trials) - int(trials["feasible"].sum())
    for ind in state["population"]:
        assert ind["genome"] not in slow and table.query(ind["genome"]).latency_ms <= limit
    with pytest.raises(ConfigError, match="already holds a nasq run"):
        runner.run_search(settings, verbose=0)

    # the resolved settings in the run directory are themselves a valid --config (JSON and YAML alike)
    (run_dir / "again.yaml").write_text(yaml.safe_dump(runner.read_run_file(run_dir).to_dict()))
    for config in (run_dir / runner.RUN_FILE, run_dir / "again.yaml"):
        again = _search_settings("--config", str(config), "--name", "again")
        assert again == runner.read_run_file(run_dir).replace(name="again")
    assert _search_settings("--config", str(run_dir / "again.yaml"), "--samples", "3").samples == 3
    # without --name, the run file starts a new run (a fresh name), it does not collide with its own run
    assert runner.check_settings(_search_settings("--config", str(run_dir / runner.RUN_FILE))).name != run_dir.name


def _search_settings(*argv: str):
    from nasq.cli import search_nb201

    parser = argparse.ArgumentParser()
    search_nb201.register(parser.add_subparsers())
    return search_nb201.nb201_settings(parser.parse_args(["nb201", *argv]))
