"""Parameter store of the weight-shared population (JASQ Appendix 4): concurrency and persistence."""

from __future__ import annotations

import pytest
import torch

from nasq.errors import CheckpointError, ConfigError
from nasq.param_store import ParameterStore, StoreCheckpoint, create_store_actor, load_state


def _store() -> ParameterStore:
    return ParameterStore({"a": torch.zeros(3), "b": torch.ones(2, 2)})


def test_interleaved_pushes_both_land():
    """Two trials pull the same base, train, push: both updates must be in the store."""
    store = _store()
    base1, v1 = store.pull(["a", "b"], with_versions=True)
    base2, v2 = store.pull(["a"], with_versions=True)
    trained1 = {"a": base1["a"] + 1.0, "b": base1["b"] * 3}
    trained2 = {"a": base2["a"] + torch.tensor([10.0, 20.0, 30.0])}
    r1 = store.push({k: trained1[k] - base1[k] for k in trained1}, v1)
    r2 = store.push({k: trained2[k] - base2[k] for k in trained2}, v2)
    assert torch.equal(store.pull(["a"])["a"], torch.tensor([11.0, 21.0, 31.0]))
    assert torch.equal(store.pull(["b"])["b"], torch.full((2, 2), 3.0))
    assert store.versions == {"a": 2, "b": 1}
    assert r1 == {"updated": 2, "stale": 0} and r2 == {"updated": 1, "stale": 1}


def test_pull_returns_copies():
    store = _store()
    store.pull(["a"])["a"].add_(5)
    assert torch.equal(store.tensors["a"], torch.zeros(3))


def test_unknown_name_and_bad_shape_raise():
    store = _store()
    with pytest.raises(ConfigError, match="'c'"):
        store.pull(["c"])
    with pytest.raises(ConfigError, match="shape"):
        store.push({"a": torch.zeros(4)})


def test_save_load_round_trip(tmp_path):
    store = _store()
    store.push({"a": torch.tensor([1.0, 2.0, 3.0])})
    path = tmp_path / "param_store.pt"
    store.save(path)
    back = ParameterStore.load(path)
    assert back.versions == store.versions and back.pushes == 1
    assert all(torch.equal(back.tensors[k], store.tensors[k]) for k in store.tensors)


def test_load_rejects_foreign_and_corrupt(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a nasq parameter store"):
        ParameterStore.load(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_state(corrupt)


@pytest.mark.ray
def test_actor_concurrent_pushes_sum_exactly(ray_session, tmp_path):
    """Several Ray tasks pull, 'train' and push at once; the store holds the exact sum."""
    ray = ray_session
    name = "nasq-param-store-test-concurrent"
    create_store_actor(name, ParameterStore({"w": torch.zeros(1000, dtype=torch.float64).float()}))

    @ray.remote(num_cpus=0)
    def trial(k: int) -> None:
        import time

        handle = ray.get_actor(name)
        for _ in range(5):
            base, versions = ray.get(handle.pull.remote(["w"], True))
            time.sleep(0.01)  # let the other tasks pull the same base
            ray.get(handle.push.remote({"w": (base["w"] + k) - base["w"]}, versions))

    ray.get([trial.remote(k) for k in range(1, 4)])
    handle = ray.get_actor(name)
    final = ray.get(handle.pull.remote(["w"]))["w"]
    assert torch.equal(final, torch.full((1000,), 5.0 * sum(range(1, 4))))
    # the Tune callback saves the actor's state and stops the actor at the end
    cb = StoreCheckpoint(name, str(tmp_path / "param_store.pt"))
    cb.on_experiment_end([])
    assert torch.equal(ParameterStore.load(tmp_path / "param_store.pt").tensors["w"], final)
    with pytest.raises(ValueError):
        ray.get_actor(name)
