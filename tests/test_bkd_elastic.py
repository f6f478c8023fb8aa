"""Elastic stages (nasq.supernet): active settings, slicing, and equality with the static nasq.blocks chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from nasq.bkd.rows import StageSetting, estimate_losses, mixed_settings, uniform_settings
from nasq.errors import ConfigError
from nasq.quant.lsq import LsqActQuant, set_quant
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


# --- INT8 quantization points (SpaceEvo §4.5, §5): what an ONNX Runtime QDQ / TFLite graph reads ---

class _RecordOps(TorchFunctionMode):
    """Records the tensor operands of every add, multiply and global pool that torch runs."""

    OPS = {"add": "add", "__add__": "add", "mul": "mul", "__mul__": "mul", "adaptive_avg_pool2d": "pool"}

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[torch.Tensor]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        op = self.OPS.get(getattr(func, "__name__", ""))
        if op is not None:
            self.calls.append((op, [a for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def _on_grid(t: torch.Tensor, q: LsqActQuant) -> bool:
    """Whether every value of ``t`` is (k - z)·s for an integer k in [qmin, qmax] of quantizer ``q``."""
    s, z = q.qparams()
    k = t.detach().double() / s + z
    return bool((k - k.round()).abs().max() < 1e-4 and k.min() > q.qmin - 1e-4 and k.max() < q.qmax + 1e-4)


def _quantized_run(block_type: str, cin: int, width: int):
    """A one-block stage (stride 1) with its quantizers on and initialised, then one recorded forward.

    Returns the block, the recorded ops and the (quantizer input, quantizer output) of every
    activation-quantizer call of that forward.
    """
    torch.manual_seed(2)
    m = ElasticStageModule(_stage(block_type, stride=1))
    _randomise_bn(m)
    m.eval()
    m.set_active((BlockChoice(width, 3, max(m.stage.expands)),))
    x = torch.randn(2, cin, 8, 8)
    set_quant(m, True)
    quant_io: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        m(x)  # initialises every quantizer
        hooks = [q.register_forward_hook(lambda mod, inp, out: quant_io.append((inp[0], out)))
                 for q in m.modules() if isinstance(q, LsqActQuant)]
        with _RecordOps() as rec:
            m(x)
    for h in hooks:
        h.remove()
    return m.blocks[0], rec.calls, quant_io


_RESIDUAL_TYPES = ["mbv2", "mbv3", "fused_mb", "fused_mb_se", "resnet_bottleneck", "resnet_bottleneck_se"]
_SE_TYPES = ["mbv3", "fused_mb_se", "resnet_bottleneck_se"]


@pytest.mark.parametrize("block_type", _RESIDUAL_TYPES)
def test_both_residual_add_operands_lie_on_their_int8_grids(block_type):
    block, calls, _ = _quantized_run(block_type, 8, 8)  # cin == cout, stride 1: identity residual
    adds = [ts for op, ts in calls if op == "add" and len(ts) == 2 and ts[0].dim() == 4]
    assert len(adds) == 1
    xq, y = adds[0]
    assert _on_grid(xq, block.in_q), "identity operand is not the block's quantized input"
    assert _on_grid(y, block.res_q), "residual branch enters the add unquantized"
    assert not _on_grid(y, block.in_q)  # the grids differ, so the check tells the operands apart
    assert len(torch.unique(y)) > 8  # a real int8 tensor, not a constant


@pytest.mark.parametrize("block_type", ["resnet_bottleneck", "resnet_bottleneck_se"])
def test_bottleneck_shortcut_conv_output_is_quantized_before_the_add(block_type):
    block, calls, _ = _quantized_run(block_type, 12, 8)  # cin != cout: 1x1 shortcut conv
    adds = [ts for op, ts in calls if op == "add" and len(ts) == 2 and ts[0].dim() == 4]
    assert len(adds) == 1
    short, y = adds[0]
    assert _on_grid(short, block.short_q), "shortcut conv output enters the add unquantized"
    assert _on_grid(y, block.res_q)
    assert len(torch.unique(short)) > 8


@pytest.mark.parametrize("block_type", _SE_TYPES)
def test_se_pools_and_multiplies_one_quantized_input_by_a_quantized_gate(block_type):
    block, calls, _ = _quantized_run(block_type, 8, 8)
    se = block.se
    muls = [ts for op, ts in calls if op == "mul" and len(ts) == 2 and ts[0].dim() == 4]
    pools = [ts for op, ts in calls if op == "pool"]
    assert len(muls) == 1 and len(pools) == 1
    h, gate = muls[0]
    assert gate.shape[-2:] == (1, 1) and h.shape[-2:] != (1, 1)
    assert _on_grid(h, se.in_q), "SE multiplies an unquantized input"
    assert _on_grid(gate, se.gate_q), "SE gate is not quantized before the multiply"
    assert pools[0][0] is h  # the very tensor that is multiplied is the one pooled
    assert len(torch.unique(h)) > 8 and len(torch.unique(gate)) > 2


@pytest.mark.parametrize("block_type", SPACEEVO_TYPES)
def test_no_tensor_is_fake_quantized_twice(block_type):
    for cin in (8, 12):  # identity residual and the strided / projecting variant
        _, _, quant_io = _quantized_run(block_type, cin, 8)
        outs = [o for _, o in quant_io]
        ins = [i for i, _ in quant_io]
        assert len(quant_io) >= 2  # mbv1: its input and the pw input
        assert not any(i is o for i in ins for o in outs), "a quantizer re-quantizes a quantized tensor"
        assert len({id(i) for i in ins}) == len(ins), "two quantizers read the same tensor"
