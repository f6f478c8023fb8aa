"""The pure evolution core and its Tune adapters, called directly (no Ray runtime).

Covers JASQ Algorithm 1 (tournament selection), regularized (aging) evolution with the SpaceEvo §4.4
two-children variant, the random baseline, and the Searcher contract (failed trials, waiting, mode).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from nasq.errors import ConfigError, GenomeError
from nasq.evolution import AgingEvolution, RandomSampling, TournamentSelection
from nasq.searchers import (
    AgingEvolutionSearcher,
    RandomSearcher,
    TournamentSelectionSearcher,
    make_searcher,
)
from nasq.spaces import Space, register


# -- a toy space with two mutation kinds ----------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    x: int
    y: int


@register("test-pair")
class PairSpace(Space[Pair]):
    """Genomes ``x<i>-y<j>``; mutation kind ``x`` changes only x, kind ``y`` only y. Records calls."""

    name = "test-pair"
    mutation_kinds = ("x", "y")

    def __init__(self, n: int = 1000) -> None:
        self.n = n
        self.calls: list[tuple[str, str | None, str | None]] = []

    def encode(self, genome: Pair) -> str:
        return f"x{genome.x}-y{genome.y}"

    def decode(self, text: str) -> Pair:
        parts = text.strip().split("-")
        if len(parts) != 2 or parts[0][:1] != "x" or parts[1][:1] != "y":
            raise GenomeError(f"bad pair genome {text!r}")
        return Pair(int(parts[0][1:]), int(parts[1][1:]))

    def random(self, rng: np.random.Generator) -> Pair:
        self.calls.append(("random", None, None))
        return Pair(int(rng.integers(self.n)), int(rng.integers(self.n)))

    def mutate(self, genome: Pair, rng: np.random.Generator, kind: str | None = None) -> Pair:
        kind = self._check_kind(kind)
        self.calls.append(("mutate", self.encode(genome), kind))
        step = int(rng.integers(1, self.n))
        if kind == "x":
            return Pair((genome.x + step) % self.n, genome.y)
        return Pair(genome.x, (genome.y + step) % self.n)

    def _init_args(self) -> tuple:
        return (self.n,)


def pair_score(genome: str) -> float:
    """A deterministic, injective-enough score of a pair genome."""
    p = PairSpace().decode(genome)
    return p.x * 1000.0 + p.y


def hash_score(genome: str) -> float:
    """A deterministic pseudo-random score for any genome string."""
    return zlib.crc32(genome.encode()) / 2**32


def drive(searcher, trials: int, score=hash_score, concurrency: int = 1, metric: str = "acc") -> list[str]:
    """Run ``trials`` trials against a searcher: keep ``concurrency`` pending, complete the oldest first."""
    suggested, pending, completed, tid = [], [], 0, 0
    while completed < trials:
        while len(pending) < concurrency and len(suggested) < trials:
            config = searcher.suggest(f"t{tid}")
            if config is None:
                break
            suggested.append(config["genome"])
            pending.append((f"t{tid}", config["genome"]))
            tid += 1
        assert pending, "searcher waits with nothing pending"
        trial_id, genome = pending.pop(0)
        searcher.on_trial_complete(trial_id, {metric: score(genome)})
        completed += 1
    return suggested


def fill(strategy, score=pair_score) -> None:
    """Evaluate the initial population of a strategy sequentially."""
    k = 0
    while not strategy.initialized:
        genome = strategy.propose(f"init{k}")
        assert genome is not None
        strategy.report(f"init{k}", score(genome))
        k += 1


# -- determinism -------------------------------------------------------------------------------
KINDS = [("tournament", {"population_size": 10, "sample_size": 3}),
         ("aging", {"population_size": 10, "sample_size": 3}),
         ("random", {})]


@pytest.mark.parametrize("kind, kwargs", KINDS)
def test_same_seed_same_suggestions_different_seed_different(kind, kwargs):
    def run(seed):
        searcher = make_searcher(kind, "nb201", metric="acc", mode="max", seed=seed, **kwargs)
        return drive(searcher, 120, concurrency=3)

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert first != other
    assert len(set(first)) > 80  # not stuck (dead genomes may be re-proposed)


# -- tournament selection (JASQ Alg. 1) ---------------------------------------------------------
def test_tournament_parent_is_best_of_sample_and_sample_worst_leaves():
    space = PairSpace()
    strategy = TournamentSelection(space, population_size=10, sample_size=4, seed=0)
    fill(strategy)
    assert len(strategy.population) == 10
    removed_not_global_worst = 0
    for k in range(60):
        alive = {m.birth: m for m in strategy.population.members}
        space.calls.clear()
        child = strategy.propose(f"c{k}")
        proposal = strategy.pending[f"c{k}"]
        sample = [alive[b] for b in proposal.sample]
        assert len(sample) == 4 and len({m.birth for m in sample}) == 4
        parent = max(sample, key=lambda m: m.score)
        worst = min(sample, key=lambda m: m.score)
        # Every mutation chain starts from the sample's best (kinds applied in turn: x then y).
        firsts = [c for c in space.calls if c[0] == "mutate" and c[2] == "x"]
        assert firsts and all(c[1] == parent.genome for c in firsts)
        assert [c[2] for c in space.calls if c[0] == "mutate"][:2] == ["x", "y"]
        ind = strategy.report(f"c{k}", pair_score(child))
        births = {m.birth for m in strategy.population.members}
        assert births == (set(alive) - {worst.birth}) | {ind.birth}
        removed_not_global_worst += worst is not min(alive.values(), key=lambda m: m.score)
    # Removal is the sample's worst, not simply the population's worst.
    assert removed_not_global_worst > 0


def test_tournament_failed_child_leaves_population_intact():
    strategy = TournamentSelection(PairSpace(), population_size=6, sample_size=3, seed=1)
    fill(strategy)
    before = [m.genome for m in strategy.population.members]
    for k, bad in enumerate([math.nan, math.inf, -math.inf, None, "n/a"]):
        child = strategy.propose(f"c{k}")
        assert strategy.report(f"c{k}", bad) is None
        assert [m.genome for m in strategy.population.members] == before
        assert child not in strategy.population.genomes
    assert strategy.failed == 5


def test_tournament_population_stays_at_p_under_concurrency():
    searcher = TournamentSelectionSearcher("nb201", population_size=8, sample_size=3, metric="acc",
                                           mode="max", seed=2)
    drive(searcher, 200, concurrency=5)
    assert len(searcher.strategy.population) == 8


# -- aging evolution ----------------------------------------------------------------------------
def test_aging_oldest_leaves_and_population_never_exceeds_p():
    strategy = AgingEvolution(PairSpace(), population_size=8, sample_size=3, seed=0)
    fill(strategy)
    for k in range(80):
        genome = strategy.propose(f"c{k}")
        ind = strategy.report(f"c{k}", pair_score(genome))
        births = [m.birth for m in strategy.population.members]
        assert len(births) == 8
        assert births == list(range(ind.birth - 7, ind.birth + 1))


def test_aging_population_bounded_under_concurrency():
    searcher = AgingEvolutionSearcher("nb201", population_size=8, sample_size=3, metric="acc", mode="max",
                                      seed=3)
    sizes = []
    original = searcher.strategy.report

    def report(ticket, score):
        out = original(ticket, score)
        sizes.append(len(searcher.strategy.population))
        return out

    searcher.strategy.report = report
    drive(searcher, 150, concurrency=6)
    assert max(sizes) == 8 and sizes[-1] == 8


def test_aging_two_children_one_per_mutation_kind_and_two_oldest_leave():
    space = PairSpace()
    # S = P: the parent must be the best alive.
    strategy = AgingEvolution(space, population_size=6, sample_size=6, children_per_parent=2, seed=4)
    fill(strategy)
    for k in range(10):
        alive = list(strategy.population.members)
        parent = max(alive, key=lambda m: m.score)
        space.calls.clear()
        a = strategy.propose(f"a{k}")
        b = strategy.propose(f"b{k}")
        mutations = [c for c in space.calls if c[0] == "mutate"]
        assert {c[2] for c in mutations} == {"x", "y"}
        assert all(c[1] == parent.genome for c in mutations)
        pa, pb, pp = space.decode(a), space.decode(b), space.decode(parent.genome)
        assert pa.y == pp.y and pa.x != pp.x  # child of kind x
        assert pb.x == pp.x and pb.y != pp.y  # child of kind y
        strategy.report(f"a{k}", pair_score(a))
        strategy.report(f"b{k}", pair_score(b))
        births = sorted(m.birth for m in strategy.population.members)
        oldest_two = sorted(m.birth for m in alive)[:2]
        assert births == sorted({m.birth for m in alive} - set(oldest_two)) + births[-2:]
        assert len(births) == 6


def test_aging_children_per_parent_must_match_mutation_kinds():
    # one more child than the space's kinds is the hparams kind of Tune search domains (issue 7 §2):
    # accepted until the first proposal shows there are none
    strategy = AgingEvolution("nb201", population_size=4, sample_size=2, children_per_parent=2)
    with pytest.raises(ConfigError, match="children_per_parent"):
        strategy.propose("a")
    with pytest.raises(ConfigError, match="children_per_parent"):
        AgingEvolution("nb201", population_size=4, sample_size=2, children_per_parent=3)
    with pytest.raises(ConfigError, match="children_per_parent"):
        AgingEvolution(PairSpace(), population_size=4, sample_size=2, children_per_parent=4)
    with pytest.raises(ConfigError, match="sample_size"):
        AgingEvolution("nb201", population_size=4, sample_size=5)


def test_aging_single_child_applies_every_mutation_kind():
    space = PairSpace()
    strategy = AgingEvolution(space, population_size=4, sample_size=4, seed=5)
    fill(strategy)
    parent = strategy.best()
    space.calls.clear()
    child = space.decode(strategy.propose("c"))
    assert [c[2] for c in space.calls if c[0] == "mutate"][:2] == ["x", "y"]
    pp = space.decode(parent.genome)
    assert child.x != pp.x and child.y != pp.y


# -- failed individuals ---------------------------------------------------------------------------
FAILURES = [
    ("nan", {"acc": math.nan}, False),
    ("inf", {"acc": math.inf}, False),
    ("missing", {"other": 1.0}, False),
    ("none", None, False),
    ("errored", {"acc": 1e12}, True),
]


@pytest.mark.parametrize("searcher_cls", [TournamentSelectionSearcher, AgingEvolutionSearcher])
@pytest.mark.parametrize("label, result, error", FAILURES, ids=[f[0] for f in FAILURES])
def test_failed_trials_never_join_and_never_parent(searcher_cls, label, result, error):
    space = PairSpace()
    searcher = searcher_cls(space, population_size=5, sample_size=5, metric="acc", mode="max", seed=6)
    failed = []
    for k in range(40):
        config = searcher.suggest(f"t{k}")
        genome = config["genome"]
        if k % 3 == 1:  # a failed trial whose metric, if used, would make it the best
            searcher.on_trial_complete(f"t{k}", result, error=error)
            failed.append(genome)
        else:
            searcher.on_trial_complete(f"t{k}", {"acc": pair_score(genome) / 1e9})
        alive = set(searcher.strategy.population.genomes)
        assert not alive & set(failed)
    parents = {c[1] for c in space.calls if c[0] == "mutate"}
    assert parents and not parents & set(failed)
    assert searcher.strategy.failed == len(failed)


def test_fitness_callable_and_failing_fitness():
    def fitness(result):
        return result["acc"] - 10.0 * result["size_mb"]

    searcher = TournamentSelectionSearcher(PairSpace(), population_size=3, sample_size=3, mode="max",
                                           fitness=fitness, seed=0)
    g = searcher.suggest("a")["genome"]
    searcher.on_trial_complete("a", {"acc": 1.0, "size_mb": 0.5})
    assert searcher.strategy.population.members[0].score == pytest.approx(-4.0)
    searcher.suggest("b")
    searcher.on_trial_complete("b", {"acc": 1.0})  # fitness raises KeyError: failed individual
    assert [m.genome for m in searcher.strategy.population.members] == [g]
    assert searcher.strategy.failed == 1


# -- waiting, first points, duplicates ----------------------------------------------------------
def test_population_waits_while_initial_population_is_pending():
    searcher = TournamentSelectionSearcher(PairSpace(), population_size=4, sample_size=2, metric="acc",
                                           mode="max", seed=7)
    first = [searcher.suggest(f"i{k}")["genome"] for k in range(4)]
    assert searcher.suggest("w0") is None and searcher.suggest("w1") is None
    for k in range(3):
        searcher.on_trial_complete(f"i{k}", {"acc": 1.0 + k})
        assert searcher.suggest(f"w{k + 2}") is None
    searcher.on_trial_complete("i3", {"acc": math.nan})  # a failed initial member is replaced
    replacement = searcher.suggest("r")
    assert replacement is not None and replacement["genome"] not in first
    assert searcher.strategy.pending["r"].origin == "random"
    assert searcher.suggest("w9") is None
    searcher.on_trial_complete("r", {"acc": 0.5})
    child = searcher.suggest("c")
    assert child is not None and searcher.strategy.pending["c"].origin == "child"


def test_points_to_evaluate_come_first_and_are_validated():
    points = [" x1-y2 ", {"genome": "x3-y4"}]
    searcher = AgingEvolutionSearcher(PairSpace(), population_size=4, sample_size=2, metric="acc",
                                      mode="max", seed=8, points_to_evaluate=points)
    assert searcher.suggest("a")["genome"] == "x1-y2"
    assert searcher.suggest("b")["genome"] == "x3-y4"
    assert searcher.suggest("c")["genome"] not in ("x1-y2", "x3-y4")
    with pytest.raises(GenomeError, match="bogus"):
        AgingEvolutionSearcher(PairSpace(), metric="acc", mode="max", points_to_evaluate=["bogus"])
    nb = RandomSearcher("nb201", metric="acc", mode="max", seed=0,
                        points_to_evaluate=["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
    assert nb.suggest("x")["genome"] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_no_duplicates_of_alive_or_pending_genomes():
    strategy = TournamentSelection("nb201", population_size=20, sample_size=5, seed=9)
    pending: list[str] = []
    for k in range(400):
        busy = set(strategy.population.genomes) | {p.genome for p in strategy.pending.values()}
        genome = strategy.propose(f"t{k}")
        if genome is None:
            strategy.report(*pending.pop(0))
            continue
        assert genome not in busy
        pending.append((f"t{k}", hash_score(genome)))
        if len(pending) >= 4:
            strategy.report(*pending.pop(0))


def test_duplicate_retries_are_bounded():
    space = PairSpace(n=1)  # one genome only: every retry collides
    strategy = RandomSampling(space, seed=0)
    assert strategy.propose("a") == "x0-y0"
    space.calls.clear()
    assert strategy.propose("b") == "x0-y0"  # gives up and re-evaluates instead of looping forever
    assert 1 < len(space.calls) <= strategy.max_retries + 1


# -- direction ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("where", ["constructor", "tune_config"])
def test_mode_decides_the_parent(mode, where):
    space = PairSpace()
    kwargs = {"metric": "loss", "mode": mode} if where == "constructor" else {}
    searcher = TournamentSelectionSearcher(space, population_size=6, sample_size=6, seed=10, **kwargs)
    if where == "tune_config":
        assert searcher.set_search_properties("loss", mode, {"lr": 0.1})
    losses = {}
    for k in range(6):
        config = searcher.suggest(f"i{k}")
        losses[config["genome"]] = float(k * 7 % 6)  # distinct values 0, 1, 5, 4, 3, 2
        searcher.on_trial_complete(f"i{k}", {"loss": losses[config["genome"]]})
    pick = min if mode == "min" else max
    expected = pick(losses, key=losses.get)
    assert searcher.strategy.best().genome == expected
    space.calls.clear()
    config = searcher.suggest("child")
    assert [c[1] for c in space.calls if c[0] == "mutate" and c[2] == "x"][0] == expected
    if where == "tune_config":
        assert config["lr"] == 0.1


def test_suggest_without_metric_or_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="metric"):
        RandomSearcher("nb201", mode="max").suggest("a")
    with pytest.raises(ConfigError, match="mode"):
        RandomSearcher("nb201", metric="acc").suggest("a")


def test_random_searcher_never_waits_and_keeps_best():
    searcher = RandomSearcher(PairSpace(), metric="acc", mode="max", seed=11)
    suggested = drive(searcher, 50, score=pair_score, concurrency=7)
    assert len(suggested) == len(set(suggested)) == 50
    best = max(suggested, key=pair_score)
    assert searcher.strategy.best().genome == best


def test_make_searcher_rejects_unknown_kind():
    with pytest.raises(ConfigError, match="'genetic'.*aging"):
        make_searcher("genetic", "nb201")


def test_works_under_concurrency_limiter():
    from ray.tune.search import ConcurrencyLimiter

    searcher = AgingEvolutionSearcher(PairSpace(), population_size=3, sample_size=2, seed=12)
    limited = ConcurrencyLimiter(searcher, max_concurrent=2)
    assert limited.set_search_properties("acc", "max", {"lr": 0.1})
    suggested = drive(limited, 30, score=pair_score, concurrency=4)  # the limiter caps pending at 2
    assert len(suggested) == 30 and not searcher.strategy.pending
    assert len(searcher.strategy.population) == 3
    assert searcher.suggest("extra")["lr"] == 0.1


# -- de-duplication against every genome ever proposed, numpy population ---------------------------
@pytest.mark.parametrize("kind", ["aging", "tournament", "random"])
def test_no_genome_is_proposed_twice_not_even_a_dead_one(kind):
    kwargs = {"population_size": 10, "sample_size": 3} if kind != "random" else {}
    searcher = make_searcher(kind, "nb201", metric="acc", mode="max", seed=4, **kwargs)
    proposed = drive(searcher, 400, concurrency=2)
    assert len(set(proposed)) == len(proposed)
    assert searcher.strategy.counters["duplicates"] == 0


def test_population_arrays_follow_every_operation():
    from nasq.evolution import Individual, Population

    rng = np.random.default_rng(0)
    pop, reference = Population(), []
    for birth in range(400):
        ind = Individual(f"g{birth}", float(rng.integers(50)), birth)  # ties on purpose
        pop.add(ind)
        reference.append(ind)
        if len(reference) > 30:
            victim = reference[0] if rng.random() < 0.5 else reference[int(rng.integers(len(reference)))]
            pop.remove(victim)
            reference.remove(victim)
        assert isinstance(pop.scores, np.ndarray)
        assert pop.members == reference and list(pop.scores) == [m.score for m in reference]
        assert pop.oldest() is reference[0]
        assert pop.best() is max(reference, key=lambda m: m.score)
        assert pop.worst() is min(reference, key=lambda m: m.score)
        state = rng.bit_generator.state
        winner, births = pop.tournament(5, rng)
        rng.bit_generator.state = state
        sample = pop.sample(5, rng)
        assert winner is max(sample, key=lambda m: m.score) and births == [m.birth for m in sample]
    rebuilt = Population(reference)
    assert rebuilt.members == reference and list(rebuilt.scores) == list(pop.scores)


def test_direct_tournament_winner_has_the_tournament_distribution():
    """Aging draws its parent's rank directly; it must match 'best of S drawn without replacement'."""
    from collections import Counter

    from nasq.evolution import Individual, Population

    rng = np.random.default_rng(1)
    pop = Population(Individual(f"g{i}", float(rng.random()), i) for i in range(40))
    draws = 40_000
    direct = Counter(pop.tournament_winner(6, rng).birth for _ in range(draws))
    sampled = Counter(pop.tournament(6, rng)[0].birth for _ in range(draws))
    for birth in set(direct) | set(sampled):
        assert abs(direct[birth] - sampled[birth]) / draws < 0.012
    best = pop.best().birth
    assert direct[best] / draws == pytest.approx(6 / 40, abs=0.01)  # the best is in the sample w.p. S/P
    assert pop.tournament_winner(40, rng) is pop.best()


def test_buffered_generator_restores_its_unused_uniforms_exactly():
    """The core's generator buffers scalar uniforms; its JSON state must carry them, so a restored
    generator continues with the very same draws (scalar and array draws interleaved)."""
    import json
    import pickle

    from nasq.evolution.rng import BLOCK, BufferedGenerator

    rng = BufferedGenerator(7)
    for _ in range(BLOCK // 3):
        rng.random()
    state = json.loads(json.dumps(rng.get_state()))
    assert len(state["buffered"]) == BLOCK - BLOCK // 3
    expected = [rng.random() for _ in range(BLOCK)] + [rng.integers(1000, size=3).tolist()]
    twin = BufferedGenerator()
    twin.set_state(state)
    assert [twin.random() for _ in range(BLOCK)] + [twin.integers(1000, size=3).tolist()] == expected
    # pickling keeps the buffer too; a bare bit-generator state (older files) restores with an empty one
    copy = BufferedGenerator(3)
    copy.random()
    clone = pickle.loads(pickle.dumps(copy))
    assert [clone.random() for _ in range(5)] == [copy.random() for _ in range(5)]
    bare = BufferedGenerator()
    bare.set_state(np.random.default_rng(5).bit_generator.state)
    assert bare.random() == np.random.default_rng(5).random()
    with pytest.raises(ValueError):
        bare.set_state({"bit_generator": state["bit_generator"], "buffered": [2.0]})


@pytest.mark.parametrize("cls", [TournamentSelectionSearcher, AgingEvolutionSearcher])
def test_a_child_carries_its_parents_genome_into_its_config_and_the_state(cls):
    searcher = cls(PairSpace(), population_size=3, sample_size=3, metric="acc", mode="max", seed=5)
    scores = {}
    for k in range(3):
        cfg = searcher.suggest(f"i{k}")
        assert "parent_genome" not in cfg  # the initial population has no parent
        scores[cfg["genome"]] = float(k)
        searcher.on_trial_complete(f"i{k}", {"acc": float(k)})
    child = searcher.suggest("c")
    best = max(scores, key=scores.get)  # the whole population is the sample: the best is the parent
    assert child["parent_genome"] == best and child["genome"] != best
    restored = cls(PairSpace(), population_size=3, sample_size=3, metric="acc", mode="max", seed=5)
    restored.set_state(searcher.get_state())
    assert restored.strategy.pending["c"].parent == best
