"""The Searcher contract under a real ``tune.Tuner`` with the NB201 trainable (issue 2)."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pandas as pd
import pytest

from nasq import experiments, runner
from nasq.nb201_table import load_table
from nasq.searchers import TournamentSelectionSearcher

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _fit(trainable, searcher, tmp_path, name, samples, table, *, concurrency=None, metric="val_acc",
         mode="max", cpu=1.0):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    alg = ConcurrencyLimiter(searcher, max_concurrent=concurrency) if concurrency else searcher
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpu}),
        # Ray Tune forwards TuneConfig's metric/mode to a searcher only with a non-empty param_space;
        # its constants reach every trial config next to the genome
        param_space={"table": str(table)},
        tune_config=tune.TuneConfig(search_alg=alg, num_samples=samples, metric=metric, mode=mode,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
    )
    return tuner.fit()


def _table_trainable(fail: dict[str, str] | None = None, sleep: float = 0.0):
    """A closure trainable (pickled by value): table lookup, optional failures, start/end times."""
    fail = dict(fail or {})

    def trainable(config):
        from ray import tune

        from nasq.nb201_table import load_table as load

        start = time.time()
        table_path = config["table"]
        genome = load(table_path).space.canonical(config["genome"])
        acc = load(table_path).query(genome).test_acc
        if fail.get(genome) == "raise":  # a good score is reported, then the trial crashes
            tune.report({"val_acc": acc, "start": start, "end": time.time()})
            raise RuntimeError("injected trial failure")
        if fail.get(genome) == "nan":
            acc = math.nan
        time.sleep(sleep)
        tune.report({"val_acc": acc, "start": start, "end": time.time()})

    return trainable


def _accs(results) -> list[float]:
    return [r.metrics["val_acc"] for r in results if r.error is None and "val_acc" in r.metrics]


def test_mode_comes_from_tuneconfig_and_is_obeyed(ray_session, nb201_table, tmp_path):
    """With metric/mode only in TuneConfig, mode='min' must drive val_acc down, mode='max' up."""
    trainable = _table_trainable()
    runs = {}
    for mode in ("max", "min"):
        searcher = TournamentSelectionSearcher("nb201", population_size=4, sample_size=2, seed=3)
        results = _fit(trainable, searcher, tmp_path, f"mode-{mode}", 16, nb201_table, mode=mode)
        assert searcher.metric == "val_acc" and searcher.mode == mode
        assert len(results) == 16 and not results.errors
        runs[mode] = searcher
    best_max = load_table(str(nb201_table)).query(runs["max"].strategy.best().genome).test_acc
    best_min = load_table(str(nb201_table)).query(runs["min"].strategy.best().genome).test_acc
    # the min searcher's "best" is the least accurate cell it kept; the max searcher's the most accurate (an
    # ignored mode would make both about equal: 16 trials of one seed leave them 9 pt apart, so 5 pt is the margin)
    assert best_min < best_max - 5
    pop_min = [ind.score for ind in runs["min"].strategy.population.members]
    assert all(s <= 0 for s in pop_min)  # scores are -val_acc under mode="min"


def test_errored_and_nan_trials_never_become_parents(ray_session, nb201_table, tmp_path):
    """The optimum reports its score then crashes, the runner-up reports NaN: neither may become a parent.

    Runs through the runner with a registered experiment, so the run's report is checked too.
    """
    table = load_table(str(nb201_table))
    ranked = sorted(table.accuracy, key=table.accuracy.__getitem__, reverse=True)
    optimum, runner_up = ranked[0], ranked[1]
    trainable = _table_trainable({optimum: "raise", runner_up: "nan"})
    nb201 = experiments.get("nb201")
    experiments.register(dataclasses.replace(nb201, name="nb201-flaky", make_trainable=lambda cfg: trainable))
    settings = runner.SearchSettings("nb201-flaky", {"table": str(nb201_table)}, searcher="aging",
                                     population_size=4, sample_size=2, samples=12, seed=0,
                                     storage=str(tmp_path), name="errors", points_to_evaluate=[optimum, runner_up])
    run_dir = runner.run_search(settings, verbose=0)

    state = json.loads(runner.newest_searcher_state(run_dir).read_text())["strategy"]
    assert state["counters"]["failed"] == 2 and state["counters"]["births"] == 12 - 2
    alive = {ind["genome"] for ind in state["population"]}
    assert optimum not in alive and runner_up not in alive
    assert max(ind["score"] for ind in state["population"]) < table.accuracy[runner_up]

    trials = pd.read_csv(run_dir / "trials.csv").set_index("genome")
    assert len(trials) == 12
    assert trials.loc[optimum, "status"] == "ERROR" and math.isnan(trials.loc[optimum, "objective"])
    assert math.isnan(trials.loc[runner_up, "objective"])
    assert trials["objective"].max() < table.accuracy[runner_up]


def test_concurrency_limiter_caps_running_trials_and_points_come_first(ray_session, nb201_table, tmp_path):
    """Under ConcurrencyLimiter(2) with CPU room for 8 trials, never more than 2 overlap; points go first."""
    table = load_table(str(nb201_table))
    points = sorted(table.accuracy)[:3]
    trainable = _table_trainable(sleep=0.25)
    searcher = TournamentSelectionSearcher("nb201", population_size=4, sample_size=2, seed=1,
                                           points_to_evaluate=points)
    results = _fit(trainable, searcher, tmp_path, "limiter", 8, nb201_table, concurrency=2, cpu=0.25)
    assert len(results) == 8 and not results.errors
    spans = sorted((r.metrics["start"], r.metrics["end"]) for r in results)
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap <= 2
    first = sorted(results, key=lambda r: int(r.metrics["experiment_tag"].split("_")[0]))[:3]
    assert [r.config["genome"] for r in first] == points
