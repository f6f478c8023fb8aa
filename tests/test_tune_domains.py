"""Ray Tune search domains beside the genome (issue 7 §2): sampled, mutated, restored, refused.

The pure tests drive the searchers directly; one test runs a real ``tune.Tuner`` whose trainable must
receive plain numbers in range, never an unsampled ``Domain``.
"""

from __future__ import annotations

import json

import pytest
from ray import tune
from ray.tune.search.sample import Domain

from nasq.errors import ConfigError
from nasq.searchers import AgingEvolutionSearcher, TournamentSelectionSearcher, make_searcher

OPTS = ["sgd", "adam", "rmsprop"]
G0 = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def param_space() -> dict:
    return {"lr": tune.loguniform(1e-4, 1e-1), "opt": tune.choice(OPTS), "bs": 32,
            "width": tune.qrandint(8, 64, 8), "layers": tune.randint(1, 4), "drop": tune.quniform(0.0, 0.5, 0.1)}


def searcher(kind: str = "aging", seed: int = 0, **kwargs):
    s = make_searcher(kind, "nb201", population_size=6, sample_size=2, metric="acc", mode="max", seed=seed,
                      **kwargs)
    assert s.set_search_properties(None, None, param_space())
    return s


def score(config: dict) -> float:
    """A deterministic score that depends on the genome and the hyperparameters."""
    return (sum(map(ord, config["genome"])) % 97) / 97 + config["lr"] * 3 + OPTS.index(config["opt"]) * 0.1


def drive(s, trials: int) -> list[dict]:
    configs = []
    for i in range(trials):
        config = s.suggest(f"t{i}")
        assert config is not None
        configs.append(config)
        s.on_trial_complete(f"t{i}", {"acc": score(config)})
    return configs


def check_values(config: dict) -> None:
    assert not any(isinstance(v, Domain) for v in config.values())
    assert type(config["lr"]) is float and 1e-4 <= config["lr"] <= 1e-1
    assert config["opt"] in OPTS
    assert config["bs"] == 32
    assert type(config["width"]) is int and config["width"] in range(8, 65, 8)
    assert type(config["layers"]) is int and config["layers"] in (1, 2, 3)  # randint: upper exclusive
    assert type(config["drop"]) is float and any(abs(config["drop"] - k / 10) < 1e-9 for k in range(6))


@pytest.mark.parametrize("kind", ["aging", "tournament", "random"])
def test_domains_are_sampled_in_range_and_children_mutate_them(kind):
    configs = drive(searcher(kind), 80)
    for config in configs:
        check_values(config)
    assert len({c["lr"] for c in configs}) > 12  # sampled, not one constant
    assert {c["layers"] for c in configs} == {1, 2, 3}
    if kind != "random":  # children: most bring a hyperparameter combination not seen before
        seen, fresh = set(), 0
        for c in configs:
            key = json.dumps({k: c[k] for k in ("drop", "layers", "lr", "opt", "width")}, sort_keys=True)
            fresh += key not in seen
            seen.add(key)
        assert fresh > len(configs) // 2  # most: a seed-independent bound (the mean is ~61-68 of 80)


def test_children_differ_in_hparams_only_by_the_extra_kind():
    s = make_searcher("aging", "nb201", population_size=6, sample_size=2, children_per_parent=2, metric="acc",
                      mode="max", seed=3)
    s.set_search_properties(None, None, param_space())
    drive(s, 6)
    alive = {(m.genome, json.dumps(m.hparams, sort_keys=True)) for m in s.strategy.population.members}
    a, b = s.suggest("a"), s.suggest("b")  # one child per kind: edge, then hparams
    hp = lambda c: json.dumps({k: c[k] for k in ("drop", "layers", "lr", "opt", "width")}, sort_keys=True)
    genomes = {g for g, _ in alive}
    hparams = {h for _, h in alive}
    assert a["genome"] not in genomes and hp(a) in hparams      # edge kind: genome changed only
    assert b["genome"] in genomes and hp(b) not in hparams      # hparams kind: one value changed only
    with pytest.raises(ConfigError, match="children_per_parent"):
        make_searcher("aging", "nb201", population_size=6, sample_size=2, children_per_parent=3, metric="acc",
                      mode="max").set_search_properties(None, None, param_space())


def test_equal_seeds_equal_suggestions_with_domains():
    first, again, other = (drive(searcher(seed=s), 40) for s in (7, 7, 8))
    assert first == again
    assert first != other


def test_state_round_trip_keeps_hparams_and_continues_exactly(tmp_path):
    original = searcher(seed=4)
    drive(original, 15)
    pending = original.suggest("p")
    path = tmp_path / "state.json"
    original.save(str(path))
    state = json.loads(path.read_text())
    assert state["strategy"]["hyper"][0]["name"] == "lr"
    assert all("hparams" in ind for ind in state["strategy"]["population"])
    restored = make_searcher("aging", "nb201", population_size=6, sample_size=2, metric="acc", mode="max")
    restored.restore(str(path))
    assert restored.suggest("p") == pending  # the pending trial keeps its hyperparameters
    for s in (original, restored):
        s.on_trial_complete("p", {"acc": score(pending)})
    assert drive(restored, 20) == drive(original, 20)


def test_points_to_evaluate_with_hyperparameters():
    s = make_searcher("aging", "nb201", population_size=4, sample_size=2, metric="acc", mode="max", seed=0,
                      points_to_evaluate=[{"genome": G0, "lr": 0.01, "opt": "adam"}, G0])
    s.set_search_properties(None, None, param_space())
    first, second = s.suggest("a"), s.suggest("b")
    assert first["genome"] == G0 and first["lr"] == 0.01 and first["opt"] == "adam"
    check_values(first)
    check_values(second)  # a bare genome gets sampled values
    for point, match in [({"genome": G0, "lr": 1.0}, "outside"), ({"genome": G0, "opt": "sgdx"}, "not one of"),
                         ({"genome": G0, "momentum": 0.9}, "momentum"), ({"lr": 0.01}, "no 'genome'")]:
        with pytest.raises(ConfigError, match=match):
            make_searcher("aging", "nb201", population_size=4, sample_size=2, metric="acc", mode="max",
                          points_to_evaluate=[point]).set_search_properties(None, None, param_space())


@pytest.mark.parametrize("value, match", [
    (tune.sample_from(lambda spec: 1), "sample_from"),
    (tune.grid_search([1, 2]), "grid_search"),
    (tune.randn(0.0, 1.0), "Normal"),
    ({"inner": tune.uniform(0, 1)}, "nested in a dict"),
    ([tune.uniform(0, 1)], "nested in a list"),
    (tune.choice([[1, 2], [3]]), "choice holding"),
])
def test_unsupported_domains_are_refused_naming_the_key(value, match):
    s = TournamentSelectionSearcher("nb201", population_size=4, sample_size=2, metric="acc", mode="max")
    with pytest.raises(ConfigError, match=match) as info:
        s.set_search_properties(None, None, {"bad": value, "lr": tune.uniform(0, 1)})
    assert "param_space['bad" in str(info.value) and "tune.loguniform" in str(info.value)


@pytest.mark.ray
@pytest.mark.slow
def test_real_tuner_trainable_receives_sampled_numbers(ray_session, tmp_path):
    from ray.tune import TuneConfig

    def trainable(config):  # self-contained: Ray pickles it by value (the test module is not importable)
        from ray import tune as t

        opts = ["sgd", "adam", "rmsprop"]
        ok = (type(config["lr"]) is float and 1e-4 <= config["lr"] <= 1e-1 and config["opt"] in opts
              and config["bs"] == 32)
        acc = (sum(map(ord, config["genome"])) % 97) / 97 + config["lr"] * 3 + opts.index(config["opt"]) * 0.1
        t.report({"acc": acc if ok else float("nan"), "ok": ok, "lr": config["lr"], "opt": str(config["opt"]),
                  "genome": config["genome"]})

    def run(name, seed):
        alg = AgingEvolutionSearcher("nb201", population_size=6, sample_size=2, seed=seed)
        tuner = tune.Tuner(trainable, param_space={"lr": tune.loguniform(1e-4, 1e-1), "opt": tune.choice(OPTS),
                                                   "bs": 32},
                           tune_config=TuneConfig(search_alg=alg, metric="acc", mode="max", num_samples=10,
                                                  max_concurrent_trials=1, reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0))
        frame = tuner.fit().get_dataframe()
        return alg, frame

    alg, frame = run("a", 5)
    assert len(frame) == 10 and frame["ok"].all()
    assert frame["lr"].nunique() > 5
    by_genome = dict(zip(frame["genome"], frame["lr"]))
    members = alg.strategy.population.members
    assert members and all(m.hparams["lr"] == by_genome[m.genome] for m in members)  # evaluated with these
    _, again = run("b", 5)
    assert sorted(zip(again["genome"], again["lr"])) == sorted(zip(frame["genome"], frame["lr"]))  # same seed
