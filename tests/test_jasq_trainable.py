"""JASQ trainable: weight-shared step against a real store actor, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from nasq.errors import CheckpointError
from nasq.models.nasnet import parameter_keys
from nasq.param_store import ParameterStore, get_store_actor, load_state
from nasq.settings import SearchSettings
from nasq.trainables.jasq import JasqTrainable, net_config_of, prepare, splits_of

GENOME = "N:0,1,sep3x3,identity;2,0,avg3x3,zero|R:1,0,identity,sep5x5;0,2,max3x3,sep3x3|B:8,4,16,8,4"
CFG = {"combinations": 2, "cells": 1, "channels": 4, "train_steps": 3, "batch_size": 32,
       "target_size_mb": 0.001, "gamma": -0.5}


@pytest.mark.ray
def test_step_trains_shared_weights_and_reports(ray_session, tmp_path):
    ray = ray_session
    run_dir = tmp_path / "jasq-trainable-run"
    run_dir.mkdir()
    settings = prepare(SearchSettings("jasq", dict(CFG)), run_dir, False)
    cfg = settings.experiment_config
    assert cfg["param_store"] == "nasq-param-store-jasq-trainable-run"
    before = ParameterStore.load(run_dir / "param_store.pt")
    trainable = JasqTrainable(config={**cfg, "genome": GENOME})
    result = trainable.train()
    for key in ("val_acc", "size_mb", "size_mb_float", "fitness", "train_seconds"):
        assert key in result
    assert 0.0 <= result["val_acc"] <= 100.0 and result["done"]
    assert 0 < result["size_mb"] < result["size_mb_float"]
    # Eq. 1 with the model over the tiny target: fitness is penalised below the accuracy
    expected = result["val_acc"] * (result["size_mb"] / 0.001) ** -0.5
    assert result["fitness"] == pytest.approx(expected)
    after = ParameterStore()
    after.load_state_dict(ray.get(get_store_actor(cfg["param_store"]).state_dict.remote()))
    used = set(parameter_keys(trainable.genome, net_config_of(cfg, splits_of(cfg))))
    changed = {k for k in before.tensors if not torch.equal(before.tensors[k], after.tensors[k])}
    assert changed and changed <= used  # only the genome's tensors moved
    assert all(after.versions[k] == (1 if k in used else 0) for k in after.versions)

    # checkpoint round trip
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    trainable.save_checkpoint(str(ckpt))
    other = JasqTrainable(config={**cfg, "genome": GENOME})
    other.load_checkpoint(str(ckpt))
    assert other.last_result == trainable.last_result
    foreign = JasqTrainable(config={**cfg, "genome": GENOME.replace("B:8,4,16,8,4", "B:8,4,16,8,8")})
    with pytest.raises(CheckpointError, match="genome"):
        foreign.load_checkpoint(str(ckpt))

    # resume: prepare restores the saved file instead of fresh weights
    from nasq.param_store import save_state

    save_state(after.state_dict(), run_dir / "param_store.pt")
    prepare(settings, run_dir, True)
    restored = ray.get(get_store_actor(cfg["param_store"]).state_dict.remote())
    assert restored["pushes"] == 1
    assert all(torch.equal(restored["tensors"][k], after.tensors[k]) for k in after.tensors)
    assert load_state(run_dir / "param_store.pt")["pushes"] == 1
