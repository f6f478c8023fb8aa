"""The SpaceEvo supernet (nasq.supernet.model / bn / train): extraction, strict subnets, BN recalibration,
sandwich-rule steps with inplace distillation and the LSQ+ phase (SpaceEvo §5)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasq.bkd.teacher import prepare_images
from nasq.blocks.torch_blocks import Head, Stem
from nasq.data import load_dataset
from nasq.errors import ConfigError, GenomeError
from nasq.quant.lsq import LsqActQuant, LsqWeightQuant, set_quant
from nasq.spaces.spaceevo import SPACEEVO_TYPES, space_from_name
from nasq.supernet import (Supernet, SupernetTrainSettings, build_supernet, enable_qat, evaluate, kd_loss,
                           recalibrate_bn, sandwich_step, sandwich_subnets, step_rng, train_epoch)

torch.set_num_threads(1)
TINY = space_from_name("spaceevo-tiny")
MIXED = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck:32-40"


def _supernet(space: str = MIXED, seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    return build_supernet(space, "spaceevo-tiny")


def _randomise_bn(m: nn.Module) -> None:
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
                bn.num_batches_tracked.fill_(7)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """64 digits training images as the tiny stem wants them (3 x 16 x 16) and their labels."""
    train = load_dataset("digits").train
    return prepare_images(train.tensors[0][:64], 16), train.tensors[1][:64]


@pytest.mark.parametrize("space", [TINY.encode(TINY.homogeneous(t)) for t in SPACEEVO_TYPES] + [MIXED])
def test_extracted_subnet_equals_the_active_supernet(space):
    net = _supernet(space)
    _randomise_bn(net)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    rng = np.random.default_rng(1)
    for sub in [net.largest(), net.smallest(), *net.sample(rng, 3)]:
        net.set_active(sub)
        static = net.extract_subnet()
        assert not static.training
        with torch.no_grad():
            torch.testing.assert_close(static(x), net(x), rtol=1e-5, atol=1e-5)
        assert isinstance(static[0], Stem) and isinstance(static[-1], Head)
        assert len(static) == 2 + sum(sub.depths)
        assert not any(isinstance(m, (LsqActQuant, LsqWeightQuant)) for m in static.modules())
    small = net.extract_subnet(net.space.encode(net.smallest()))  # a string is made active first
    assert net.active == net.smallest()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())


def test_set_active_is_strict_and_names_the_bad_token():
    net = _supernet()
    good = net.space.encode(net.smallest())
    with pytest.raises(GenomeError, match="'c99'|'99'"):
        net.set_active(good.replace("c16", "c99", 1))
    with pytest.raises(GenomeError, match="'mbv2'"):
        net.set_active(good.replace("mbv3", "mbv2"))
    with pytest.raises(GenomeError, match="stages"):
        net.set_active(good + "|" + good.split("|")[0])
    other = build_supernet(TINY.encode(TINY.homogeneous("mbv1")), "spaceevo-tiny").largest()
    with pytest.raises(GenomeError):
        net.set_active(other)  # a genome of another candidate space
    assert net.active == net.largest()  # a refused subnet changes nothing
    assert net.set_active(good) == net.smallest()


def test_sample_uses_only_the_callers_generator():
    net = _supernet()
    a, b = net.sample(np.random.default_rng(5), 10), net.sample(np.random.default_rng(5), 10)
    assert a == b and len(set(a)) > 5
    assert net.active == net.largest()  # sampling never changes the active subnet


def test_recalibrate_bn_sets_the_cumulative_batch_statistics():
    net = _supernet()
    _randomise_bn(net)
    net.set_active(net.smallest())
    net.eval()
    batches = [(torch.randn(8, 3, 16, 16), torch.zeros(8)), (torch.randn(8, 3, 16, 16) + 1, torch.zeros(8))]
    # oracle: each BN's input, recorded from a copy in train mode (BN outputs use batch statistics only)
    ref, inputs = copy.deepcopy(net).train(), {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, name=name: inputs.setdefault(name, []).append(a[0]))
             for name, m in ref.named_modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for x, _ in batches:
            ref(x)
    for h in hooks:
        h.remove()
    assert recalibrate_bn(net, batches, 2) == 2
    assert not net.training
    bns = dict(net.named_modules())
    for name, seen in inputs.items():
        bn, c = bns[name], seen[0].shape[1]
        mean = torch.stack([t.mean((0, 2, 3)) for t in seen]).mean(0)
        var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in seen]).mean(0)
        torch.testing.assert_close(bn.running_mean[:c], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var[:c], var, rtol=1e-4, atol=1e-5)
        assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 2
    unused = [m for n, m in bns.items() if isinstance(m, nn.BatchNorm2d) and n not in inputs]
    assert unused and all(float(m.running_mean.abs().max()) == 0 for m in unused)  # reset, not run
    with pytest.raises(ConfigError, match="no batches"):
        recalibrate_bn(net, [], 1)


def _recorded_draws(net: Supernet, rng: np.random.Generator, n_random: int = 2) -> list:
    calls, original = [], net.set_active
    net.set_active = lambda s: (calls.append(s), original(s))[1]
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    sandwich_step(net, x, y, torch.optim.SGD(net.parameters(), lr=0.01), rng, n_random)
    del net.set_active
    return calls[:-1]  # the last call restores the previously active subnet


def test_sandwich_draws_are_a_function_of_seed_and_step():
    a = _recorded_draws(_supernet(seed=0), step_rng(3, 10))
    b = _recorded_draws(_supernet(seed=1), step_rng(3, 10))  # another worker, other weights
    c = _recorded_draws(_supernet(seed=0), step_rng(3, 11))
    assert a == b and len(a) == 4
    assert a[0] == _supernet().largest() and a[1] == _supernet().smallest()
    assert a[2:] != c[2:] and a[:2] == c[:2]
    assert len(_recorded_draws(_supernet(), step_rng(3, 10), n_random=3)) == 5


def _manual_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    p = torch.softmax(teacher / t, 1)
    return (p * (p.log() - torch.log_softmax(student / t, 1))).sum(1).mean() * t * t


def test_largest_learns_labels_the_others_distil_and_gradients_are_summed():
    net = _supernet()
    ref = copy.deepcopy(net)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    losses = sandwich_step(net, x, y, torch.optim.SGD(net.parameters(), lr=0.5), step_rng(0, 4), 2, 2.0)
    ref.train()
    members = sandwich_subnets(ref.space, step_rng(0, 4), 2)
    assert [n for n, _ in members] == list(losses) == ["largest", "smallest", "random_0", "random_1"]
    ref.set_active(members[0][1])
    teacher = ref(x)
    want = {"largest": -torch.log_softmax(teacher, 1)[torch.arange(6), y].mean()}
    for name, sub in members[1:]:
        ref.set_active(sub)
        want[name] = _manual_kl(ref(x), teacher.detach(), 2.0)
    for name, value in want.items():
        assert losses[name] == pytest.approx(float(value.detach()), rel=1e-4, abs=1e-6)
        assert value > 1e-3
    sum(want.values()).backward()
    params = dict(net.named_parameters())
    for name, p in ref.named_parameters():  # one SGD step on the summed gradients
        expect = p if p.grad is None else p - 0.5 * p.grad
        torch.testing.assert_close(params[name], expect, rtol=1e-4, atol=1e-6)
    assert kd_loss(teacher, teacher, 2.0).abs() < 1e-6  # a student equal to its teacher: no KD loss


def test_sandwich_steps_lower_the_largest_loss_on_a_digits_batch(digits):
    x, y = digits[0][:32], digits[1][:32]
    net = _supernet("mbv1:8-16|mbv1:16-24|mbv1:24-32")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def ce() -> float:
        net.train()
        with torch.no_grad():
            return float(F.cross_entropy(net(x), y))

    before = ce()
    losses = [sandwich_step(net, x, y, opt, step_rng(0, t)) for t in range(30)]
    assert ce() < 0.7 * before  # untrained: ~2.3 = ln 10; 30 steps bring it to ~0.7
    assert losses[-1]["largest"] < 0.7 * losses[0]["largest"]


def test_train_epoch_steps_through_the_global_step_seeds(digits):
    x, y = digits
    loader = [(x[:32], y[:32]), (x[32:], y[32:])]
    settings = SupernetTrainSettings(n_random=1, seed=7, grad_clip=None)
    a, b = _supernet(), _supernet()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    mean = train_epoch(a, loader, opt_a, settings, step=5)
    steps = [sandwich_step(b, xb, yb, opt_b, step_rng(7, 5 + i), 1) for i, (xb, yb) in enumerate(loader)]
    for k in ("largest", "smallest", "random_0"):
        assert mean[k] == pytest.approx((steps[0][k] + steps[1][k]) / 2, rel=1e-6)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    with pytest.raises(ConfigError, match="n_random"):
        SupernetTrainSettings(n_random=-1)


def test_qat_phase_turns_quantizers_on_and_stays_close_to_fp32(digits):
    x, y = digits
    net = _supernet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for t in range(3):
        sandwich_step(net, x, y, opt, step_rng(0, t))
    enable_qat(net, x)
    quant = [m for m in net.modules() if isinstance(m, (LsqActQuant, LsqWeightQuant))]
    ready = {id(q) for q in quant if q.initialized}
    assert all(q.enabled for q in quant) and net.active == net.largest()
    used = []  # the quantizers the largest subnet runs were all initialised by enable_qat
    hooks = [q.register_forward_pre_hook(lambda mod, a: used.append(id(mod))) for q in quant]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert len(set(used)) > 30 and set(used) <= ready
    for sub in (net.largest(), net.smallest()):
        net.set_active(sub)
        with torch.no_grad():
            q = net(x)
            fp = set_quant(net, False)(x)
            set_quant(net, True)
        err = float((q - fp).pow(2).mean() / fp.pow(2).mean())
        assert 0 < err < 0.05  # INT8 noise, not garbage
    scale = net.head.in_q.scale.detach().clone()
    sandwich_step(net, x, y, opt, step_rng(0, 3))
    assert net.head.in_q.scale.grad is not None and not torch.equal(net.head.in_q.scale, scale)


def test_evaluate_measures_the_given_subnet_in_eval_mode(digits):
    x, _ = digits
    net = _supernet()
    sub = net.set_active(net.smallest())
    recalibrate_bn(net, [torch.randn(64, 3, 16, 16)], 1)  # eval statistics unlike any batch of x
    with torch.no_grad():
        labels = net.extract_subnet(sub).eval()(x).argmax(1)  # labels = the static subnet's predictions
    assert len(torch.unique(labels)) > 1
    net.set_active(net.largest())
    net.train()
    loader = [(x[:40], labels[:40]), (x[40:], labels[40:])]
    assert evaluate(net, net.space.encode(sub), loader) == 1.0
    assert net.training and net.active == net.largest()
    assert evaluate(net, net.largest(), loader) < 0.9
    # with BN recalibrated on x first, the labels of a recalibrated copy are matched instead
    ref = copy.deepcopy(net)
    ref.set_active(sub)
    recalibrate_bn(ref, [x], 1)
    with torch.no_grad():
        calibrated = ref.extract_subnet().eval()(x).argmax(1)
    assert not torch.equal(calibrated, labels)
    assert evaluate(net, sub, [(x, calibrated)], calib=[(x, labels)], bn_batches=1) == 1.0
    with pytest.raises(ConfigError, match="empty"):
        evaluate(net, sub, [])
