"""Searcher state: versioned JSON save/restore, pickling, and refusal of foreign or corrupt state.

The evolution must continue exactly as saved (the issue's resume requirement), so every round-trip test
compares the continued suggestion sequence with that of an uninterrupted searcher.
"""

from __future__ import annotations

import json
import os
import pickle
import zlib

import pytest

from nasq.errors import CheckpointError
from nasq.searchers import (
    AgingEvolutionSearcher,
    RandomSearcher,
    TournamentSelectionSearcher,
    make_searcher,
)
from nasq.spaces.nb201 import NB201Space


class Driver:
    """Deterministic asynchronous driver: keeps ``concurrency`` trials pending, completes the oldest.

    Every third completion fails (NaN) so failed counters and pending state are exercised too.
    """

    def __init__(self, concurrency: int = 3) -> None:
        self.concurrency = concurrency
        self.pending: list[tuple[str, str]] = []
        self.next_id = 0
        self.done = 0

    def step(self, searcher) -> list[str]:
        """Fill the pending slots, then complete one trial; return the genomes suggested now."""
        out = []
        while len(self.pending) < self.concurrency:
            trial_id = f"trial_{self.next_id:05d}"
            config = searcher.suggest(trial_id)
            if config is None:
                break
            self.next_id += 1
            self.pending.append((trial_id, config["genome"]))
            out.append(config["genome"])
        trial_id, genome = self.pending.pop(0)
        value = zlib.crc32(genome.encode()) / 2**32
        self.done += 1
        searcher.on_trial_complete(trial_id, {"acc": float("nan") if self.done % 3 == 0 else value})
        return out

    def run(self, searcher, steps: int) -> list[str]:
        out = []
        for _ in range(steps):
            out += self.step(searcher)
        return out


def clone_driver(driver: Driver) -> Driver:
    copy = Driver(driver.concurrency)
    copy.pending, copy.next_id, copy.done = list(driver.pending), driver.next_id, driver.done
    return copy


SEARCHERS = {
    "tournament": lambda seed: TournamentSelectionSearcher("nb201", population_size=12, sample_size=4,
                                                           metric="acc", mode="max", seed=seed),
    "aging": lambda seed: AgingEvolutionSearcher("nb201", population_size=12, sample_size=4, metric="acc",
                                                 mode="max", seed=seed),
    "random": lambda seed: RandomSearcher("nb201", metric="acc", mode="max", seed=seed),
}


@pytest.fixture(params=sorted(SEARCHERS))
def kind(request) -> str:
    return request.param


@pytest.mark.parametrize("steps_before", [5, 40])  # during and after the initial population
def test_save_restore_continues_the_exact_sequence(tmp_path, kind, steps_before):
    original, driver = SEARCHERS[kind](1), Driver()
    driver.run(original, steps_before)
    path = tmp_path / "state.json"
    original.save(str(path))
    pending_at_save = dict(original.strategy.pending)
    assert pending_at_save  # in-flight trials are part of the state

    restored = SEARCHERS[kind](999)  # another seed: the generator state must come from the file
    restored.restore(str(path))
    assert restored.strategy.pending.keys() == pending_at_save.keys()
    assert {t: p.genome for t, p in restored.strategy.pending.items()} == \
        {t: p.genome for t, p in pending_at_save.items()}

    other_driver = clone_driver(driver)
    expected = driver.run(original, 60)
    got = other_driver.run(restored, 60)
    assert got == expected
    assert [(m.genome, m.score, m.birth) for m in restored.strategy.population.members] == \
        [(m.genome, m.score, m.birth) for m in original.strategy.population.members]
    assert restored.strategy.failed == original.strategy.failed


def test_pending_trials_survive_and_are_accepted_after_restore(tmp_path):
    searcher = AgingEvolutionSearcher("nb201", population_size=4, sample_size=2, metric="acc", mode="max",
                                      seed=3)
    genomes = {f"t{k}": searcher.suggest(f"t{k}")["genome"] for k in range(4)}
    searcher.save_to_dir(str(tmp_path), session_str="s1")
    restored = AgingEvolutionSearcher("nb201", population_size=4, sample_size=2, seed=0)
    restored.restore_from_dir(str(tmp_path))
    assert restored.metric == "acc" and restored.mode == "max"
    assert restored.suggest("w") is None  # still waiting for the same initial population
    for k, (trial_id, genome) in enumerate(genomes.items()):
        restored.on_trial_complete(trial_id, {"acc": float(k)})
    assert [m.genome for m in restored.strategy.population.members] == list(genomes.values())
    assert restored.suggest("child") is not None


def test_state_file_is_versioned_json_not_pickle(tmp_path):
    searcher = TournamentSelectionSearcher("nb201", population_size=5, sample_size=2, metric="acc",
                                           mode="max", seed=4, extra_config={"table": "x.csv"})
    Driver().run(searcher, 12)
    path = tmp_path / "state.json"
    searcher.save(str(path))
    raw = path.read_bytes()
    assert raw.lstrip().startswith(b"{")
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)
    state = json.loads(raw)
    strategy = state["strategy"]
    assert strategy["format"] == "nasq.evolution" and isinstance(strategy["version"], int)
    assert strategy["kind"] == "tournament" and strategy["space"] == "nb201"
    assert len(strategy["population"]) == 5
    assert {"genome", "score", "birth"} <= set(strategy["population"][0])
    assert strategy["pending"] and strategy["rng"]["bit_generator"]["bit_generator"] == "PCG64"
    assert all(0.0 <= u < 1.0 for u in strategy["rng"]["buffered"])
    assert state["metric"] == "acc" and state["mode"] == "max" and state["extra_config"] == {"table": "x.csv"}


def test_save_to_dir_and_restore_from_dir_pick_the_newest(tmp_path):
    # Tune's session strings are time stamps; the newest by name wins even when a copy changed mtimes.
    searcher = SEARCHERS["aging"](5)
    driver = Driver()
    driver.run(searcher, 10)
    searcher.save_to_dir(str(tmp_path), session_str="2026-11-24_10-00-00")
    driver.run(searcher, 10)
    searcher.save_to_dir(str(tmp_path), session_str="2026-11-24_11-00-00")
    os.utime(tmp_path / "nasq-searcher-state-2026-11-24_11-00-00.json", (1, 1))
    restored = SEARCHERS["aging"](5)
    restored.restore_from_dir(str(tmp_path))
    assert restored.strategy.state_dict() == searcher.strategy.state_dict()


def test_pickled_searcher_continues_identically(kind):
    searcher, driver = SEARCHERS[kind](6), Driver()
    driver.run(searcher, 25)
    copy = pickle.loads(pickle.dumps(searcher))
    assert isinstance(copy.strategy.space, NB201Space)
    copy_driver = clone_driver(driver)
    assert copy_driver.run(copy, 40) == driver.run(searcher, 40)


# -- refused states -----------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    searcher = SEARCHERS["tournament"](7)
    Driver().run(searcher, 8)
    path = tmp_path / "state.json"
    searcher.save(str(path))
    return path


def _assert_refused(searcher, path, problem: str, fix: str) -> None:
    with pytest.raises(CheckpointError) as info:
        searcher.restore(str(path))
    message = str(info.value)
    assert str(path) in message and problem in message and fix in message
    assert "\n" not in message


def test_other_searcher_kind_is_refused(saved):
    _assert_refused(SEARCHERS["aging"](0), saved, "TournamentSelectionSearcher", "same searcher kind")


def test_other_space_is_refused(saved):
    from test_evolution import PairSpace

    searcher = TournamentSelectionSearcher(PairSpace(), population_size=12, sample_size=4)
    _assert_refused(searcher, saved, "tournament/nb201", "start a new run")


def test_other_parameters_are_refused(saved):
    searcher = TournamentSelectionSearcher("nb201", population_size=13, sample_size=4)
    _assert_refused(searcher, saved, "'population_size': 12", "start a new run")


def test_truncated_json_is_refused(saved):
    saved.write_text(saved.read_text()[: 200])
    _assert_refused(SEARCHERS["tournament"](0), saved, "not valid JSON", "resume from another run")


def test_wrong_version_is_refused(saved):
    state = json.loads(saved.read_text())
    state["strategy"]["version"] = 99
    saved.write_text(json.dumps(state))
    _assert_refused(SEARCHERS["tournament"](0), saved, "version 99", "upgrade nasq")


@pytest.mark.parametrize("payload", [[], {"searcher": "TournamentSelectionSearcher"}, {"a": 1}])
def test_not_a_state_is_refused(saved, payload):
    saved.write_text(json.dumps(payload))
    _assert_refused(SEARCHERS["tournament"](0), saved, "not a nasq", "point at")


def test_corrupt_field_is_refused(saved):
    state = json.loads(saved.read_text())
    del state["strategy"]["population"][0]["score"]
    saved.write_text(json.dumps(state))
    _assert_refused(SEARCHERS["tournament"](0), saved, "corrupt field", "start a new run")


def test_missing_file_and_empty_dir_are_refused(tmp_path):
    _assert_refused(SEARCHERS["random"](0), tmp_path / "nope.json", "not found", "check the run directory")
    with pytest.raises(CheckpointError, match="no nasq searcher state"):
        SEARCHERS["random"](0).restore_from_dir(str(tmp_path))


# -- atomic writes ------------------------------------------------------------------------------
def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    searcher = SEARCHERS["aging"](8)
    driver = Driver()
    driver.run(searcher, 5)
    path = tmp_path / "state.json"
    searcher.save(str(path))
    before = path.read_bytes()
    driver.run(searcher, 5)

    def broken_dump(obj, fp, *args, **kwargs):
        fp.write('{"half": ')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        searcher.save(str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["state.json"]  # no temp file left behind
    restored = SEARCHERS["aging"](0)
    restored.restore(str(path))
    assert restored.strategy.births < searcher.strategy.births


def test_make_searcher_state_round_trip_with_two_children(tmp_path):
    from test_evolution import PairSpace

    def build():
        return make_searcher("aging", PairSpace(), population_size=6, sample_size=3, children_per_parent=2,
                             metric="acc", mode="min", seed=2)

    searcher, driver = build(), Driver(concurrency=1)
    driver.run(searcher, 9)
    assert searcher.strategy.queue  # the second child is queued at save time
    searcher.save(str(tmp_path / "s.json"))
    restored = build()
    restored.restore(str(tmp_path / "s.json"))
    assert clone_driver(driver).run(restored, 20) == driver.run(searcher, 20)


# -- a failed restore changes nothing (build, then swap) ---------------------------------------------
@pytest.mark.parametrize("corrupt", [
    lambda st: st["strategy"].update(rng={"bit_generator": "PCG64", "state": "garbage"}),
    lambda st: st["strategy"]["counters"].update(failed="many"),
    lambda st: st["strategy"]["queue"].append({"origin": "child"}),
    lambda st: st["strategy"].update(seen=7),
    lambda st: st["strategy"].update(hyper=[{"type": "float", "name": "lr", "low": 1, "high": 0, "log": False}]),
])
def test_corrupt_state_raises_and_leaves_the_searcher_unchanged(tmp_path, corrupt):
    donor, target, twin = SEARCHERS["aging"](1), SEARCHERS["aging"](2), SEARCHERS["aging"](2)
    Driver().run(donor, 30)
    target_driver, twin_driver = Driver(), Driver()
    target_driver.run(target, 20)
    twin_driver.run(twin, 20)
    path = tmp_path / "state.json"
    donor.save(str(path))
    state = json.loads(path.read_text())
    corrupt(state)
    path.write_text(json.dumps(state))
    before = json.dumps(target.get_state(), sort_keys=True)
    with pytest.raises(CheckpointError, match="corrupt field"):
        target.restore(str(path))
    assert json.dumps(target.get_state(), sort_keys=True) == before
    assert target_driver.run(target, 30) == twin_driver.run(twin, 30)  # and it still works


def test_state_keeps_every_genome_ever_proposed(tmp_path):
    searcher, driver = SEARCHERS["aging"](8), Driver()
    proposed = driver.run(searcher, 60)
    path = tmp_path / "state.json"
    searcher.save(str(path))
    state = json.loads(path.read_text())["strategy"]
    assert set(proposed) <= set(state["seen"])
    assert len(state["population"]) == 12 < len(state["seen"])
    restored = SEARCHERS["aging"](0)
    restored.restore(str(path))
    more = clone_driver(driver).run(restored, 40)
    assert not set(more) & set(proposed)  # no dead genome proposed again after the restore
