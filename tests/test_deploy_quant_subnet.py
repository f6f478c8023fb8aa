"""Quantized extraction (nasq.deploy.quant_subnet): the static subnet carries the supernet's LSQ+ quantizers,
sliced and frozen, and equals the supernet's fake-quant forward (SpaceEvo §5, LSQ+)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.bkd.teacher import prepare_images
from nasq.data import load_dataset
from nasq.deploy import extract_quantized_subnet
from nasq.deploy.quant_subnet import FrozenActQuant, FrozenWeightQuant
from nasq.errors import ConfigError
from nasq.quant.lsq import EPS, LsqActQuant, LsqWeightQuant, set_quant
from nasq.supernet import build_supernet, enable_qat, sandwich_step, step_rng

torch.set_num_threads(1)
SPACES = ["mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck_se:32-40",  # SE, hswish, bottleneck shortcut
          "mbv1:8-16|mbv2:16-24|fused_mb:24-32",
          "fused_mb:8-16|resnet_bottleneck:16-24|mbv2:24-32"]


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """64 digits training images as the tiny stem wants them (3 x 16 x 16) and their labels."""
    train = load_dataset("digits").train
    return prepare_images(train.tensors[0][:64], 16), train.tensors[1][:64]


def _qat_supernet(space: str, digits) -> torch.nn.Module:
    """A supernet after enable_qat and two QAT sandwich steps (scales moved away from their init)."""
    x, y = digits
    torch.manual_seed(0)
    net = build_supernet(space, "spaceevo-tiny")
    enable_qat(net, x)
    init = net.head.in_q.scale.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for t in range(2):
        sandwich_step(net, x, y, opt, step_rng(0, t))
    assert not torch.equal(net.head.in_q.scale, init)
    return net.eval()


@pytest.fixture(scope="module", params=SPACES)
def qat_net(request, digits):
    return _qat_supernet(request.param, digits)


def _subnets(net) -> list:
    return [net.largest(), net.smallest(), *net.sample(np.random.default_rng(4), 3)]


def test_quantized_subnet_equals_the_fake_quant_supernet(qat_net, digits):
    x = digits[0][:16]
    for sub in _subnets(qat_net):
        qat_net.set_active(sub)
        with torch.no_grad():
            want = qat_net(x)
            got = extract_quantized_subnet(qat_net)(x)
            fp32 = qat_net.extract_subnet().eval()(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert float((got - fp32).abs().max()) > 1e-3  # the quantizers act: not the fp32 subnet


def _calls(model: torch.nn.Module, x: torch.Tensor, kinds: tuple) -> list[tuple[str, torch.Tensor, int]]:
    """(kind, scales used, zero point) of every quantizer call of a forward, in call order."""
    calls, hooks = [], []

    def record(mod, args):
        if isinstance(mod, LsqWeightQuant):  # the slice the elastic conv uses
            calls.append(("w", mod.scale.detach()[:args[0].shape[0]].abs().clamp_min(EPS).clone(), 0))
        elif isinstance(mod, LsqActQuant):
            calls.append(("a", mod.scale.detach().abs().clamp_min(EPS).clone(), mod.qparams()[1]))
        elif isinstance(mod, FrozenWeightQuant):
            assert not mod.zero_point.any()
            calls.append(("w", mod.scale.clone(), 0))
        else:
            calls.append(("a", mod.scale.reshape(1).clone(), int(mod.zero_point)))

    for m in model.modules():
        if isinstance(m, kinds):
            hooks.append(m.register_forward_pre_hook(record))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return calls


def test_every_quantizer_the_supernet_runs_is_carried_with_its_sliced_scales(qat_net, digits):
    x = digits[0][:4]
    for sub in _subnets(qat_net)[1:]:
        qat_net.set_active(sub)
        want = _calls(qat_net, x, (LsqWeightQuant, LsqActQuant))
        got = _calls(extract_quantized_subnet(qat_net), x, (FrozenWeightQuant, FrozenActQuant))
        assert len(got) == len(want) > 10  # none dropped, none added
        for (kg, sg, zg), (kw, sw, zw) in zip(got, want):
            assert kg == kw and zg == zw
            torch.testing.assert_close(sg, sw, rtol=0, atol=0)  # the first cout scales, exactly


def test_a_narrow_subnet_uses_only_the_first_channels_scales(digits):
    net = _qat_supernet(SPACES[1], digits)
    net.set_active(net.smallest())
    with torch.no_grad():
        net(digits[0][:4])
        before = extract_quantized_subnet(net)(digits[0][:8])
        stem_channels = net.stem.conv.weight.shape[0]
        for m in net.modules():  # channels no subnet layer of the smallest width reads
            if isinstance(m, LsqWeightQuant) and len(m.scale) > stem_channels and m is not net.head.wq:
                m.scale[-1:] = 1e3
        after = extract_quantized_subnet(net)(digits[0][:8])
        for m in net.stages.modules():  # channel 0 of every stage layer: channels it does read
            if isinstance(m, LsqWeightQuant):
                m.scale[0] *= 4
        changed = extract_quantized_subnet(net)(digits[0][:8])
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert float((changed - before).abs().max()) > 1e-4


def test_extraction_refuses_uninitialised_quantizers():
    net = build_supernet(SPACES[1], "spaceevo-tiny")
    set_quant(net, True)  # on, but no quantized forward has initialised them
    with pytest.raises(ConfigError, match="not initialised.*enable_qat"):
        extract_quantized_subnet(net, net.smallest())
