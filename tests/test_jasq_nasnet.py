"""The JASQ skeleton (Fig. 2) and its weight-sharing supernet (Appendix 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.models.nasnet import (BitRule, NetConfig, SharedNasNet, bits_for_parameters, build_network,
                                parameter_keys)
from nasq.spaces import get

TINY = get("jasq-tiny")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions are far slower with several threads on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

G = TINY.decode("N:0,1,sep3x3,identity;2,0,avg3x3,zero|R:1,0,identity,sep5x5;0,2,max3x3,sep3x3|B:8,4,16,8,4")


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (3, 32, 32)])
def test_skeleton_shapes(shape):
    cfg = NetConfig(num_classes=10, input_shape=shape, channels=4, cells=1, combinations=2)
    net = SharedNasNet(cfg)
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]
    feats = []
    net.cells[-1].register_forward_hook(lambda m, i, o: feats.append(o))
    out = net(torch.randn(2, *shape), G)
    assert out.shape == (2, 10)
    # two reductions (H/4) and 4F channels, times B because every combination is concatenated
    assert feats[0].shape == (2, 2 * 4 * 4, shape[1] // 4, shape[2] // 4)


def test_subnet_matches_supernet_and_uses_genome_keys():
    cfg = NetConfig(num_classes=10, input_shape=(1, 8, 8), channels=4, cells=1, combinations=2)
    torch.manual_seed(0)
    sup = SharedNasNet(cfg).eval()
    x = torch.randn(3, 1, 8, 8)
    rng = np.random.default_rng(0)
    for genome in [G] + [TINY.random(rng) for _ in range(8)]:
        sub = sup.extract_subnet(genome).eval()
        assert torch.allclose(sub(x), sup(x, genome), atol=1e-5)
        assert sorted(sub.state_dict()) == sorted(parameter_keys(genome, cfg))


def test_supernet_gradients_reach_only_the_genomes_tensors():
    cfg = NetConfig(num_classes=10, input_shape=(1, 8, 8), channels=4, cells=1, combinations=2)
    sup = SharedNasNet(cfg)
    sup(torch.randn(4, 1, 8, 8), G).sum().backward()
    used = set(parameter_keys(G, cfg))
    with_grad = {n for n, p in sup.named_parameters() if p.grad is not None}
    assert with_grad <= used and len(with_grad) > 0.8 * len(used)
    assert len(used) < len(dict(sup.named_parameters()))


def test_keys_follow_ops():
    cfg = NetConfig(num_classes=10, input_shape=(1, 8, 8), channels=4, cells=1, combinations=2)
    keys = set(parameter_keys(G, cfg))
    assert "cells.0.ops.b0s0_sep3x3.dw1.weight" in keys  # normal cell: sep3x3 on slot 0 of combination 0
    assert not any(k.startswith("cells.0.ops.b0s1") for k in keys)  # stride-1 identity has no weights
    assert "cells.1.ops.b0s0_reduce.conv1.weight" in keys  # reduction cell: identity on a cell input
    assert "cells.1.ops.b1s1_sep3x3.pw2.weight" in keys
    assert not any(k.startswith("cells.1.ops.b1s0") for k in keys)  # max pool has no weights
    zeros = TINY.decode("N:0,1,zero,zero;2,0,zero,zero|R:1,0,zero,zero;0,2,zero,zero|B:8,4,16,8,4")
    zkeys = parameter_keys(zeros, cfg)
    assert all(k.startswith(("stem.", "classifier.")) for k in zkeys)
    assert build_network(zeros, cfg)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_bits_follow_cells_and_rule():
    cfg = NetConfig(num_classes=10, input_shape=(1, 8, 8), channels=4, cells=1, combinations=2)
    bits = bits_for_parameters(G, cfg)
    assert set(bits) == set(parameter_keys(G, cfg))
    assert bits["cells.0.ops.b0s0_sep3x3.dw1.weight"] == 8
    assert bits["cells.1.ops.b0s0_reduce.conv1.weight"] == 4
    assert bits["cells.2.pre1.conv.weight"] == 16
    assert bits["cells.4.pre0.conv1.weight"] == 4  # factorized reduce of the cell after a reduction
    assert bits["cells.0.ops.b0s0_sep3x3.bn1.weight"] == 16  # BN follows the rule
    assert bits["stem.0.weight"] == 16 and bits["classifier.weight"] == 16
    custom = bits_for_parameters(G, cfg, BitRule(stem=8, classifier=4, batchnorm=32))
    assert custom["stem.0.weight"] == 8 and custom["classifier.bias"] == 4
    assert custom["cells.4.pre1.bn.bias"] == 32 and custom["cells.4.pre1.conv.weight"] == 4


def test_standalone_network_trains_with_running_stats():
    cfg = NetConfig(num_classes=10, input_shape=(3, 32, 32), channels=4, cells=1, combinations=2)
    net = build_network(G, cfg)
    assert any(k.endswith("running_mean") for k in net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
