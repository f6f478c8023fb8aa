"""Constraint-aware evolution (issue 7 §3): a cost known before evaluation, enforced in the core.

Hard mode never proposes a genome over the limit (initial population, children, random search) and
counts its re-draws in the state; an impossible limit raises ``ConstraintError``; penalty mode scales
the score as JASQ Eq. 1; the NB201 latency limit builds the constraint from the HELP latency table.
"""

from __future__ import annotations

import json
import pickle
import zlib

import pytest

from nasq.errors import ConfigError, ConstraintError
from nasq.evolution import AgingEvolution, Constraint, RandomSampling, TournamentSelection
from nasq.searchers import make_searcher
from nasq.spaces.nb201 import NB201Space

SPACE = NB201Space()
STRATEGIES = [(AgingEvolution, {"population_size": 10, "sample_size": 3}),
              (TournamentSelection, {"population_size": 10, "sample_size": 3}),
              (RandomSampling, {})]


def convs(genome: str) -> float:
    """A cheap cost: the number of convolution edges of an NB201 cell (0..6)."""
    return float(sum(op.startswith("nor_conv") for op in SPACE.decode(genome).ops))


def acc(genome: str) -> float:
    """A score that rewards convolutions, so the search pushes against the limit."""
    return convs(genome) + (sum(map(ord, genome)) % 89) / 100


def run(strategy, trials: int, concurrency: int = 2) -> list[str]:
    proposed, pending = [], []
    for i in range(trials):
        genome = strategy.propose(f"t{i}")
        if genome is None:
            strategy.report(*pending.pop(0))
            genome = strategy.propose(f"t{i}")
        proposed.append(genome)
        pending.append((f"t{i}", acc(genome)))
        if len(pending) >= concurrency:
            strategy.report(*pending.pop(0))
    return proposed


@pytest.mark.parametrize("cls, kwargs", STRATEGIES)
def test_hard_constraint_never_proposes_an_infeasible_genome(cls, kwargs):
    strategy = cls("nb201", seed=1, constraint=convs, max_cost=1, **kwargs)
    proposed = run(strategy, 300)
    assert max(convs(g) for g in proposed) <= 1
    assert len(set(proposed)) > 250
    assert strategy.counters["infeasible_redrawn"] > 50  # about 2/3 of random cells have 2+ convolutions
    state = strategy.state_dict()
    assert state["counters"]["infeasible_redrawn"] == strategy.counters["infeasible_redrawn"]
    assert state["params"]["constraint"] == {"limit": 1.0, "mode": "hard", "name": "cost"}


def test_unconstrained_search_would_cross_the_limit():
    """The control for the test above: the same search without the constraint proposes 2+ convolutions."""
    proposed = run(AgingEvolution("nb201", seed=1, population_size=10, sample_size=3), 300)
    assert max(convs(g) for g in proposed) > 1


def test_impossible_constraint_raises_and_never_proposes():
    strategy = AgingEvolution("nb201", seed=0, population_size=4, sample_size=2, constraint=lambda g: 10.0,
                              max_cost=1.0, max_redraws=16)
    with pytest.raises(ConstraintError, match="raise the limit"):
        strategy.propose("a")
    assert strategy.pending == {}


def test_searcher_with_no_feasible_genome_finishes_the_search_instead_of_raising_in_tune():
    from ray.tune.search import Searcher

    searcher = make_searcher("aging", "nb201", population_size=4, sample_size=2, metric="acc", mode="max",
                             constraint=lambda g: 10.0, max_cost=1.0)
    assert searcher.suggest("a") == Searcher.FINISHED
    assert searcher.strategy.pending == {}


def test_a_small_feasible_set_is_exhausted_then_repeated_not_violated():
    def heavy_edges(genome: str) -> float:  # feasible: only none/skip edges, 2**6 = 64 of 15,625 cells
        return float(sum(op not in ("none", "skip_connect") for op in SPACE.decode(genome).ops))

    strategy = RandomSampling("nb201", seed=0, constraint=heavy_edges, max_cost=0)
    proposed = [strategy.propose(f"t{i}") for i in range(80)]
    assert max(heavy_edges(g) for g in proposed) == 0
    assert len(set(proposed)) > 48  # most feasible cells, then bounded retries re-propose feasible ones
    assert strategy.counters["duplicates"] >= 16


def test_children_over_the_limit_are_redrawn_then_random_genomes_tried():
    # 4 % of cells, scattered (a hash), are feasible: most neighbours of a feasible parent are not, so with
    # 20 redraws children often give up and the strategy falls back to random cells inside the limit.
    def scattered(genome: str) -> float:
        return 0.0 if zlib.crc32(genome.encode()) % 25 == 0 else 1.0

    strategy = AgingEvolution("nb201", seed=2, population_size=4, sample_size=2, constraint=scattered, max_cost=0,
                              max_redraws=20)
    proposed = run(strategy, 40, concurrency=1)
    assert max(scattered(g) for g in proposed) == 0
    assert strategy.counters["infeasible_gave_up"] > 0
    assert strategy.counters["infeasible_redrawn"] > 400


def test_infeasible_point_to_evaluate_is_refused():
    heavy = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    with pytest.raises(ConfigError, match="over the limit"):
        TournamentSelection("nb201", population_size=4, sample_size=2, points_to_evaluate=[heavy],
                            constraint=convs, max_cost=1)


def test_penalty_mode_scales_over_limit_scores_as_eq1():
    strategy = RandomSampling("nb201", seed=0, population_size=100, constraint=convs, max_cost=2.0,
                              constraint_mode="penalty")
    proposed = run(strategy, 200, concurrency=1)
    assert max(convs(g) for g in proposed) > 2  # penalty mode proposes over-limit genomes
    for ind in strategy.population.members:
        cost = convs(ind.genome)
        expected = acc(ind.genome) * ((cost / 2.0) ** -0.2 if cost > 2 else 1.0)
        assert ind.score == pytest.approx(expected)
    assert strategy.counters["penalised"] > 0
    with pytest.raises(ConfigError, match="gamma"):
        Constraint(convs, 2.0, mode="penalty", gamma=0.3)


def test_constraint_arguments_are_validated():
    with pytest.raises(ConfigError, match="needs a limit"):
        AgingEvolution("nb201", population_size=4, sample_size=2, constraint=convs)
    with pytest.raises(ConfigError, match="without a constraint"):
        AgingEvolution("nb201", population_size=4, sample_size=2, max_cost=3)
    with pytest.raises(ConfigError, match="not one of"):
        AgingEvolution("nb201", population_size=4, sample_size=2, constraint=convs, max_cost=1,
                       constraint_mode="soft")


def test_state_with_constraint_round_trips_and_refuses_another_limit(tmp_path):
    kwargs = {"population_size": 6, "sample_size": 2, "metric": "acc", "mode": "max", "constraint": convs}
    original = make_searcher("aging", "nb201", seed=3, max_cost=2, **kwargs)
    for i in range(20):
        config = original.suggest(f"t{i}")
        original.on_trial_complete(f"t{i}", {"acc": acc(config["genome"])})
    path = tmp_path / "s.json"
    original.save(str(path))
    counters = json.loads(path.read_text())["strategy"]["counters"]
    assert counters["infeasible_redrawn"] == original.strategy.counters["infeasible_redrawn"] > 0
    restored = make_searcher("aging", "nb201", max_cost=2, **kwargs)
    restored.restore(str(path))
    assert [restored.suggest(f"n{i}")["genome"] for i in range(3)] == \
        [original.suggest(f"n{i}")["genome"] for i in range(3)]
    from nasq.errors import CheckpointError

    with pytest.raises(CheckpointError, match="differ"):
        make_searcher("aging", "nb201", max_cost=3, **kwargs).restore(str(path))


def test_boundary_draws_propose_the_costliest_of_several_new_feasible_genomes():
    """draws=k collects k new feasible candidates and proposes the costliest: the proposals sit nearer
    the limit than plain rejection's, stay feasible and new, and the state records the setting."""
    def proposals(draws: int) -> list[str]:
        c = Constraint(convs, 3, draws=draws)
        return run(AgingEvolution("nb201", seed=5, population_size=10, sample_size=3, constraint=c), 200)

    plain, boundary = proposals(1), proposals(10)
    for proposed in (plain, boundary):
        assert max(convs(g) for g in proposed) <= 3 and len(set(proposed)) == len(proposed)
    at_limit = [sum(convs(g) == 3 for g in p) for p in (plain, boundary)]
    assert at_limit[1] > 1.5 * at_limit[0]  # 3 convolutions are ~1/4 of feasible cells; k=10 finds one nearly always
    strategy = AgingEvolution("nb201", seed=5, population_size=10, sample_size=3,
                              constraint=Constraint(convs, 3, draws=10))
    assert strategy.state_dict()["params"]["constraint"]["draws"] == 10
    assert pickle.loads(pickle.dumps(Constraint(convs, 3, draws=4))).draws == 4
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="draws"):
            Constraint(convs, 3, draws=bad)


# -- the NB201 latency limit (HELP latency table) -------------------------------------------------
@pytest.fixture(scope="module")
def latency_cfg(shared_data):
    return {"table": str(shared_data / "nb201" / "nb201_nats_tss_test_acc_200ep.csv"), "dataset": "cifar100",
            "latency_table": str(shared_data / "nb201" / "nb201_latency_help_24dev.csv"),
            "latency_column": "lat_ms_eyeriss", "max_latency_ms": 3.9}


def test_nb201_constraint_modes(latency_cfg):
    from nasq.trainables.nb201 import LatencyLimit, make_constraint, make_fitness

    hard = make_constraint(latency_cfg)
    assert isinstance(hard, Constraint) and hard.mode == "hard" and hard.limit == 3.9 and hard.draws == 10
    assert make_constraint({**latency_cfg, "constraint_draws": 1}).draws == 1
    assert make_constraint({**latency_cfg, "constraint_mode": "penalty"}).draws == 1
    assert make_fitness(latency_cfg) is None  # the core enforces the limit: no failed individuals
    assert make_constraint({**latency_cfg, "constraint_mode": "penalty"}).mode == "penalty"
    after = {**latency_cfg, "constraint_mode": "after"}
    assert make_constraint(after) is None and isinstance(make_fitness(after), LatencyLimit)
    assert make_constraint({k: v for k, v in latency_cfg.items() if k != "max_latency_ms"}) is None
    copy = pickle.loads(pickle.dumps(hard))  # Tune pickles the searcher: the constraint must travel
    g = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert copy.cost_of(g) == hard.cost_of(g) > 3.9


def test_nb201_hard_limit_search_stays_feasible(latency_cfg):
    from nasq.nb201_table import load_table
    from nasq.trainables.nb201 import make_constraint

    table = load_table(latency_cfg["table"], "cifar100", latency_cfg["latency_table"], "lat_ms_eyeriss")
    searcher = make_searcher("aging", "nb201", population_size=20, sample_size=5, metric="val_acc", mode="max",
                             seed=0, constraint=make_constraint(latency_cfg))
    for i in range(100):
        genome = searcher.suggest(f"t{i}")["genome"]
        assert table.latency[genome] <= 3.9
        searcher.on_trial_complete(f"t{i}", {"val_acc": table.accuracy[genome]})


@pytest.mark.ray
@pytest.mark.slow
def test_nb201_hard_limit_through_real_tune(ray_session, latency_cfg, tmp_path):
    from ray import tune

    from nasq.trainables.nb201 import make_constraint, nb201_trainable

    searcher = make_searcher("aging", "nb201", population_size=4, sample_size=2, metric="val_acc", mode="max",
                             seed=0, constraint=make_constraint(latency_cfg), extra_config=latency_cfg)
    tuner = tune.Tuner(nb201_trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=6,
                                                                    max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="lat", verbose=0))
    frame = tuner.fit().get_dataframe()
    assert len(frame) == 6 and frame["feasible"].all() and (frame["latency_ms"] <= 3.9).all()


@pytest.mark.ray
@pytest.mark.slow
def test_nb201_search_with_a_limit_counts_redraws_in_its_status(ray_session, latency_cfg, tmp_path):
    """Through the runner (the CLI's path): every trial is feasible, and live.json / the status actor
    say how many over-limit genomes the core redrew instead of evaluating."""
    from nasq import runner
    from nasq.settings import NB201Settings, SearchSettings
    from nasq.status import read_live

    options = NB201Settings(**{k: v for k, v in latency_cfg.items()})
    settings = SearchSettings("nb201", options, searcher="aging", population_size=4, sample_size=2, samples=6,
                              storage=str(tmp_path), name="lim")
    run_dir = runner.run_search(settings, verbose=0)
    state = json.loads(runner.newest_searcher_state(run_dir).read_text())["strategy"]
    live = read_live(run_dir)
    assert live.done == 6 and live.failed == 0 and live.infeasible == 0
    assert state["counters"]["infeasible_redrawn"] > 0  # 78 % of the cells are over 3.9 ms on Eyeriss
    assert live.redrawn == state["counters"]["infeasible_redrawn"]
    assert f"{live.redrawn} over the limit redrawn" in live.summary()
