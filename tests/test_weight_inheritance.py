"""Issue 11: a child inherits its parent's trained tensors; BN recalibrated per genome.

Store-level tests use the plain :class:`ParameterStore`; the trainable test drives
:class:`JasqTrainable` against a plain store through a stand-in for the Ray actor handle.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from nasq.errors import CheckpointError, ConfigError
from nasq.models.nasnet import NetConfig, SharedNasNet, parameter_keys, with_running_stats
from nasq.models.training import recalibrate_bn
from nasq.param_store import ParameterStore, load_state, save_state
from nasq.spaces.jasq import JasqSpace

PARENT = "N:0,1,sep3x3,identity;2,0,avg3x3,zero|R:1,0,identity,sep5x5;0,2,max3x3,sep3x3|B:8,4,16,8,4"
# one mutation: normal cell combination 0, op1 sep3x3 -> sep5x5 (one new tensor set, the rest shared)
CHILD = "N:0,1,sep5x5,identity;2,0,avg3x3,zero|R:1,0,identity,sep5x5;0,2,max3x3,sep3x3|B:8,4,16,8,4"
CFG = {"combinations": 2, "cells": 1, "channels": 4, "train_steps": 3, "batch_size": 16, "lr": 0.05}


def _store(**kw) -> ParameterStore:
    return ParameterStore({"a": torch.zeros(3), "b": torch.ones(2), "c": torch.zeros(1)}, **kw)


def test_child_starts_from_parent_snapshot_and_global_for_the_rest():
    store = _store()
    store.push({"a": torch.ones(3), "b": torch.ones(2)}, snapshot_key="P",
               snapshot={"a": torch.full((3,), 7.0), "b": torch.full((2,), 9.0)})
    got = store.pull_inherited(["a", "c"], "P")
    assert torch.equal(got["tensors"]["a"], torch.full((3,), 7.0))  # the parent's, not the global 1s
    assert torch.equal(got["tensors"]["c"], torch.zeros(1))  # not in the parent: the global store's
    assert got["inherited"] == ["a"] and got["versions"] == {"a": 1, "c": 0} and got["parent"] == "P"
    got["tensors"]["a"].add_(1)
    assert torch.equal(store.snapshots["P"]["a"], torch.full((3,), 7.0))  # copies, not views
    unknown = store.pull_inherited(["a"], "nobody")
    assert unknown["inherited"] == [] and torch.equal(unknown["tensors"]["a"], torch.ones(3))


def test_inherited_pushes_are_deltas_and_both_land():
    """The concurrency rule survives inheritance: a child's push adds trained - inherited."""
    store = _store()
    store.keep_snapshot("P", {"a": torch.full((3,), 5.0)})
    child = store.pull_inherited(["a"], "P")
    other, v_other = store.pull(["a"], with_versions=True)
    store.push({"a": (child["tensors"]["a"] + 2.0) - child["tensors"]["a"]}, child["versions"])
    r = store.push({"a": (other["a"] + 10.0) - other["a"]}, v_other)
    assert torch.equal(store.tensors["a"], torch.full((3,), 12.0))
    assert r["stale"] == 1 and store.versions["a"] == 2


def test_snapshots_are_bounded_lru_and_survive_save(tmp_path):
    store = _store(max_snapshots=2)
    for key, v in (("g1", 1.0), ("g2", 2.0)):
        store.keep_snapshot(key, {"a": torch.full((3,), v)})
    store.pull_inherited(["a"], "g1")  # g1 used: g2 is now the least recently used
    store.keep_snapshot("g3", {"a": torch.full((3,), 3.0)})
    assert list(store.snapshots) == ["g1", "g3"]
    save_state(store.state_dict(), tmp_path / "s.pt")
    back = ParameterStore()
    back.load_state_dict(load_state(tmp_path / "s.pt"))
    assert list(back.snapshots) == ["g1", "g3"] and back.max_snapshots == 2
    assert torch.equal(back.snapshots["g3"]["a"], torch.full((3,), 3.0))
    assert ParameterStore(max_snapshots=0).keep_snapshot("x", {}) is None
    bad = store.state_dict()
    bad["snapshot_keys"] = ["only-one"]
    with pytest.raises(CheckpointError, match="snapshot"):
        ParameterStore().load_state_dict(bad)
    with pytest.raises(ConfigError, match="max_snapshots"):
        ParameterStore(max_snapshots=-1)


def test_nearest_snapshot_is_the_closest_tensor_set():
    store = _store()
    store.keep_snapshot("far", {"c": torch.zeros(1)})
    store.keep_snapshot("near", {"a": torch.zeros(3), "b": torch.ones(2)})
    store.keep_snapshot("newest-far", {"b": torch.ones(2), "c": torch.zeros(1)})
    assert store.nearest_snapshot(["a", "b"]) == "near"
    assert store.pull_inherited(["a", "b"], None, nearest=True)["parent"] == "near"
    assert store.pull_inherited(["a", "b"], None)["inherited"] == []


def test_recalibrate_bn_matches_hand_computed_statistics():
    torch.manual_seed(0)
    space = JasqSpace(2, 1)
    cfg = NetConfig(10, (3, 8, 8), 4, 1, 2)
    net = SharedNasNet(cfg, space.decode(PARENT))
    x = torch.randn(40, 3, 8, 8)
    calibrated = recalibrate_bn(with_running_stats(net), TensorDataset(x, torch.zeros(40, dtype=torch.long)),
                                batches=1, batch_size=1000)
    conv_out = torch.nn.functional.conv2d(x, net.stem[0].weight, padding=1)  # the stem BN's input
    bn = calibrated.stem[1]
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, conv_out.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert not calibrated.training
    assert all(torch.equal(p, net.state_dict()[k]) for k, p in calibrated.named_parameters())
    with pytest.raises(ValueError, match="running statistics"):
        recalibrate_bn(net, TensorDataset(x, torch.zeros(40, dtype=torch.long)))


class _Method:
    def __init__(self, fn):
        self.remote = fn


class _Handle:
    """Stands in for the store actor's handle: ``handle.push.remote(...)`` calls the plain store."""

    def __init__(self, store: ParameterStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return _Method(getattr(self._store, name))


def _trial(monkeypatch, store: ParameterStore, genome: str, **extra):
    from nasq.trainables import jasq

    monkeypatch.setattr(jasq, "get_store_actor", lambda name: _Handle(store))
    monkeypatch.setattr(jasq, "_ray_get", lambda value: value)
    return jasq.JasqTrainable(config={**CFG, "param_store": "fake", "genome": genome, **extra})


def test_child_trial_inherits_parent_tensors(monkeypatch):
    """P trains and pushes; the global store then moves far away; C (lr ~0) must start from P."""
    from nasq.trainables.jasq import initial_store, net_config_of, splits_of

    store = initial_store(CFG)
    parent = _trial(monkeypatch, store, PARENT, bn_recal_batches=2)  # also runs the BN recalibration path
    assert 0.0 <= parent.train()["val_acc"] <= 100.0
    p_snap = store.snapshots[parent.genome_str]
    store.push({k: torch.full_like(v, 0.5) for k, v in store.tensors.items()})  # other trials' pushes
    child = _trial(monkeypatch, store, CHILD, lr=1e-12, parent_genome=PARENT)
    result = child.train()
    c_names = set(parameter_keys(child.genome, net_config_of(CFG, splits_of(CFG))))
    shared = c_names & set(p_snap)
    assert result["inherited_tensors"] == len(shared) and len(shared) < len(c_names)
    c_snap = store.snapshots[child.genome_str]  # lr ~0: what the child trained is what it started from
    assert all(torch.allclose(c_snap[k], p_snap[k], atol=1e-6) for k in shared)
    assert all(torch.allclose(c_snap[k], store.tensors[k], atol=1e-6) for k in c_names - shared)
    assert all((p_snap[k] - store.tensors[k]).abs().max() > 0.1 for k in shared)  # global moved away

    ignored = _trial(monkeypatch, store, CHILD, lr=1e-12, inherit_weights=False, parent_genome=PARENT)
    snap_before = {k: v.clone() for k, v in store.snapshots[child.genome_str].items()}
    assert ignored.train()["inherited_tensors"] == 0  # switched off: pulls the global store, keeps no snapshot
    assert all(torch.equal(store.snapshots[child.genome_str][k], snap_before[k]) for k in c_names)

    nearest = _trial(monkeypatch, store, CHILD, lr=1e-12)  # no parent given: nearest snapshot (itself here)
    assert nearest.train()["inherited_tensors"] == len(c_names)


def test_sharing_options_reject_bad_values():
    from nasq.trainables.jasq import SharingOptions

    assert SharingOptions.from_config({}) == SharingOptions()
    with pytest.raises(ConfigError, match="bn_recal_batches"):
        SharingOptions.from_config({"bn_recal_batches": -1})
    with pytest.raises(ConfigError, match="parent_genome"):
        SharingOptions.from_config({"parent_genome": 3})
