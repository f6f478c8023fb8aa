"""Supernet training on Ray Train (nasq.supernet.launch; SpaceEvo §5): two DDP workers, fp32 then LSQ+
phases: the settings and shards (the Ray Train runs, killed and resumed: tests/test_supernet_cli.py)."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from nasq.errors import CheckpointError, ConfigError
from nasq.settings import SupernetSettings
from nasq.supernet import Supernet
from nasq.supernet.launch import (CHECKPOINT_FILE, _restore_rng, checkpoint_state, load_checkpoint_state,
                                  make_optimizer, shard_batches, state_digest)

torch.set_num_threads(1)
SPACE = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck:32-40"
BASE = SupernetSettings(space=SPACE, hyperspace="spaceevo-tiny", data_limit=160, epochs=1, qat_epochs=1,
                        workers=2, batch_size=16, bn_batches=1, n_random=1, device="cpu")


def _fresh() -> Supernet:
    return Supernet.from_string(SPACE, "spaceevo-tiny")


def test_shards_are_equal_disjoint_and_reshuffled_per_epoch():
    a = [np.concatenate(shard_batches(50, r, 2, 8, 0, 0)) for r in range(2)]
    assert len(a[0]) == len(a[1]) == 24 and not set(a[0]) & set(a[1])
    np.testing.assert_array_equal(a[0], np.concatenate(shard_batches(50, 0, 2, 8, 0, 0)))
    assert not np.array_equal(a[0], np.concatenate(shard_batches(50, 0, 2, 8, 0, 1)))
    with pytest.raises(ConfigError, match="workers"):
        shard_batches(1, 0, 2, 8, 0, 0)


def test_bad_settings_name_the_field():
    for field, bad in (("workers", 0), ("epochs", -1), ("lr", 0.0), ("n_random", -1), ("device", "gpu")):
        with pytest.raises(ConfigError, match=field):
            dataclasses.replace(BASE, **{field: bad})
    with pytest.raises(ConfigError, match="epochs"):
        dataclasses.replace(BASE, epochs=0, qat_epochs=0)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_state("/nonexistent")


def test_cosine_schedule_is_a_closed_form_of_the_step():
    net = torch.nn.Linear(2, 2)
    opt, sched = make_optimizer(net, 0.1, total_steps=4)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(5)], abs=1e-12)
    assert opt.param_groups[0]["momentum"] == 0.9


def test_checkpoint_round_trip_is_weights_only_and_restores_rng(tmp_path):
    torch.manual_seed(3)
    net = _fresh()
    opt, sched = make_optimizer(net, 0.05, 10)
    np.random.seed(5)
    torch.manual_seed(9)
    doc = checkpoint_state(net, opt, sched, "fp32", epoch=2, step=17)
    doc["history"] = [{"epoch": 2, "phase": "fp32", "acc_largest": 0.5}]
    torch.save(doc, tmp_path / CHECKPOINT_FILE)
    expect_np, expect_torch = np.random.rand(3), torch.rand(3)
    back = load_checkpoint_state(str(tmp_path))  # weights_only=True inside
    assert (back["epoch"], back["step"], back["phase"]) == (2, 17, "fp32") and back["history"] == doc["history"]
    other = Supernet.from_string(SPACE, "spaceevo-tiny")
    other.load_state_dict(back["model"])
    assert state_digest(other) == state_digest(net)
    _restore_rng(back)
    np.testing.assert_array_equal(np.random.rand(3), expect_np)
    assert torch.equal(torch.rand(3), expect_torch)
    torch.save({"phase": "warmup", "model": {}}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not a supernet checkpoint"):
        load_checkpoint_state(str(tmp_path))
