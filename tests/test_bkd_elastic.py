"""Elastic stages (nasq.supernet): active settings, slicing, and equality with the static nasq.blocks chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.bkd.rows import StageSetting, estimate_losses, mixed_settings, uniform_settings
from nasq.errors import ConfigError
from nasq.quant.lsq import set_quant
from nasq.spaces.spaceevo import SPACEEVO_TYPES, ElasticStage, space_from_name
from nasq.spaces.spaceevo_subnet import BlockChoice
from nasq.supernet.elastic import ElasticStageModule


def _stage(t: str, stride: int = 2) -> ElasticStage:
    expands = (1.0,) if t == "mbv1" else ((0.5, 1.0) if t.startswith("resnet") else (1.0, 3.0))
    return ElasticStage(t, (8, 16), (8, 12), stride, 8, (3, 5), (1, 2), expands)


def _randomise_bn(m: torch.nn.Module) -> None:
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("block_type", SPACEEVO_TYPES)
def test_active_setting_equals_static_nasq_blocks_chain(block_type):
    torch.manual_seed(0)
    st = _stage(block_type)
    m = ElasticStageModule(st)
    _randomise_bn(m)
    m.eval()
    rng = np.random.default_rng(0)
    for _ in range(4):
        blocks = tuple(BlockChoice(int(rng.choice(st.widths)), int(rng.choice(st.kernels)),
                                   float(rng.choice(st.expands))) for _ in range(int(rng.choice(st.depths))))
        cin = int(rng.choice(st.in_widths))
        m.set_active(blocks)
        x = torch.randn(2, cin, 8, 8)
        with torch.no_grad():
            y = m(x)
            static = m.extract(cin).eval()
            ref = static(x)
        assert y.shape == (2, blocks[-1].width, 4, 4)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        assert sum(p.numel() for p in static.parameters()) < sum(p.numel() for p in m.parameters())


def test_kernel_is_the_centre_crop_and_width_the_first_channels():
    m = ElasticStageModule(_stage("mbv2", stride=1))
    m.set_active((BlockChoice(8, 3, 3.0),))
    static = m.extract(12)
    big = m.blocks[0].dw.conv.weight  # (max mid, 1, 5, 5)
    mid = 36  # round(12 * 3)
    torch.testing.assert_close(static[0].dw[0].weight, big[:mid, :, 1:4, 1:4])
    torch.testing.assert_close(static[0].project[0].weight, m.blocks[0].project.conv.weight[:8, :mid])
    assert m(torch.randn(1, 12, 8, 8)).shape == (1, 8, 8, 8)


def test_active_specs_are_the_candidate_space_blocks():
    space = space_from_name("spaceevo-tiny")
    cand = space.candidate("mbv3:8-16|fused_mb:24-32|resnet_bottleneck:24-32")
    rng = np.random.default_rng(3)
    batch = cand.sample_subnets(6, rng)
    for row in range(len(batch)):
        sub = cand.genome(batch, row)
        chain, pos = cand.blocks(sub)[1:-1], 0
        for i, st in enumerate(cand.stages):
            m = ElasticStageModule(st)
            m.set_active(sub.stages[i])
            specs = m.active_specs(chain[pos].cin)
            assert specs == chain[pos:pos + len(specs)]
            pos += len(specs)


def test_set_active_refuses_settings_outside_the_stage():
    m = ElasticStageModule(_stage("fused_mb"))
    with pytest.raises(ConfigError, match="depth"):
        m.set_active((BlockChoice(8, 3, 3.0),) * 3)
    with pytest.raises(ConfigError, match="outside"):
        m.set_active((BlockChoice(24, 3, 3.0),))
    with pytest.raises(ConfigError, match="channels"):
        m(torch.randn(1, 10, 8, 8))


def test_fake_quant_stage_uses_sliced_per_channel_scales():
    torch.manual_seed(1)
    m = ElasticStageModule(_stage("mbv1", stride=1))
    m.set_active((BlockChoice(16, 5, 1.0),) * 2)
    x = torch.randn(4, 12, 8, 8)
    with torch.no_grad():
        fp = m(x)
        set_quant(m, True)
        q = m(x)  # initialises every quantizer from the largest weights
    pw = m.blocks[0].pw.conv
    assert pw.wq.initialized and (pw.wq.scale > 0).all() and pw.wq.scale.shape == (16,)
    m.set_active((BlockChoice(8, 3, 1.0),))
    y = m(x)
    assert y.shape == (4, 8, 8, 8)
    err = float((q - fp).pow(2).mean() / fp.pow(2).mean())
    assert 0 < err < 0.05  # INT8 noise, not garbage


def test_uniform_rows_and_the_uniform_mean_estimator_on_an_additive_table():
    st = _stage("mbv2")
    uniform = uniform_settings(st)
    assert len(uniform) == 2 * 2 * (2 * 2 * 2)  # in widths x depths x (widths x kernels x expands)
    f = {c: 0.01 * c.width + 0.1 * c.kernel + 0.02 * c.expand for c in {b for s in uniform for b in s.blocks}}
    loss = lambda s: 0.3 + s.cin * 0.001 + sum(f[b] for b in s.blocks)  # noqa: E731  additive over blocks
    table = {s.key(2): loss(s) for s in uniform}
    mixed = mixed_settings(st, 6, np.random.default_rng(0))
    assert mixed and all(not s.uniform and len(s.blocks) == 2 for s in mixed)
    est = estimate_losses(table, np.stack([s.row(2) for s in mixed]))
    # L = base + sum_j f(c_j): the uniform setting of c has base + d f(c), so the mean over j is exact
    np.testing.assert_allclose(est, [loss(s) for s in mixed], rtol=1e-12)
    with pytest.raises(ConfigError, match="no uniform setting"):
        estimate_losses(table, StageSetting(99, mixed[0].blocks).row(2)[None])
