"""Block specs (canonical keys, strict parsing, cost estimates), PyTorch blocks and their Keras twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasq.blocks.cost import block_ops, spec_features
from nasq.blocks.spec import BLOCK_TYPES, BlockSpec, chain_key, check_chain, mid_channels
from nasq.blocks.torch_blocks import build_chain, create_block, list_blocks, register_block
from nasq.errors import ConfigError, GenomeError

SPECS = [
    BlockSpec("stem", 32, 3, 16, 3, 2),
    BlockSpec("mbv1", 16, 16, 24, 3, 1),
    BlockSpec("mbv1", 15, 8, 8, 5, 2),
    BlockSpec("mbv2", 16, 24, 24, 3, 1, 6),
    BlockSpec("mbv2", 16, 24, 32, 5, 2, 1),
    BlockSpec("mbv3", 8, 32, 32, 3, 1, 4),
    BlockSpec("mbv3", 9, 16, 40, 7, 2, 3.5),
    BlockSpec("resnet_bottleneck", 8, 32, 32, 3, 1, 0.25),
    BlockSpec("resnet_bottleneck", 8, 32, 64, 3, 2, 0.5),
    BlockSpec("resnet_bottleneck_se", 8, 16, 16, 5, 1, 1),
    BlockSpec("fused_mb", 16, 16, 16, 3, 1, 4),
    BlockSpec("fused_mb", 7, 16, 24, 3, 2, 2),
    BlockSpec("fused_mb_se", 8, 24, 24, 3, 1, 2),
    BlockSpec("head", 4, 64, 10, 1, 1),
]
CHAIN = [BlockSpec("stem", 32, 3, 16, 3, 2), BlockSpec("mbv2", 16, 16, 24, 3, 2, 6),
         BlockSpec("fused_mb_se", 8, 24, 24, 3, 1, 4), BlockSpec("resnet_bottleneck", 8, 24, 32, 3, 2, 0.25),
         BlockSpec("mbv3", 4, 32, 32, 5, 1, 4), BlockSpec("head", 4, 32, 10, 1, 1)]


def test_key_round_trip_and_canonical_form():
    for spec in SPECS:
        assert BlockSpec.from_key(spec.key()) == spec
    assert BlockSpec("mbv2", 56, 32, 32, 3, 1, 6).key() == "mbv2-r56-i32-o32-k3-s1-e6"
    assert BlockSpec("resnet_bottleneck", 14, 64, 64, expand=0.25).key() == \
        "resnet_bottleneck-r14-i64-o64-k3-s1-e0.25"
    assert len({s.key() for s in SPECS}) == len(SPECS)


@pytest.mark.parametrize("key, token", [
    ("mbv9-r56-i32-o32-k3-s1-e6", "'mbv9'"),            # unknown type
    ("mbv2-r56-i32-o32-k4-s1-e6", "'k4'"),              # kernel not allowed
    ("mbv2-r56-i32-o32-k3-s3-e6", "'s3'"),              # stride not allowed
    ("mbv2-r56-x32-o32-k3-s1-e6", "'x32'"),             # wrong prefix
    ("mbv2-r56-i032-o32-k3-s1-e6", "'i032'"),           # non-canonical integer
    ("mbv2-r56-i32-o32-k3-s1-e6.0", "'e6.0'"),          # non-canonical expand
    ("mbv2-r56-i32-o32-k3-s1-eX", "'eX'"),              # not a number
    ("mbv2-r56-i32-o32-k3-s1", "tokens"),               # missing token
    ("mbv1-r56-i32-o32-k3-s1-e6", "no expand ratio"),   # expand on a type without one
    ("head-r7-i32-o10-k3-s1-e1", "'k3'"),               # head kernel must be 1
    ("mbv2-r56-i32-o32-k3-s1-e99", "expand must be"),   # expand out of range
])
def test_from_key_is_strict(key, token):
    with pytest.raises(GenomeError) as err:
        BlockSpec.from_key(key)
    assert token in str(err.value)
    if token.startswith("'k") or token.startswith("'s"):
        assert "allowed" in str(err.value)


def test_spec_validation_in_constructor():
    with pytest.raises(GenomeError, match="cin"):
        BlockSpec("mbv2", 8, 0, 8)
    with pytest.raises(GenomeError, match="allowed"):
        BlockSpec("conv", 8, 8, 8)


def test_mid_channels_and_residual():
    assert mid_channels(BlockSpec("mbv2", 8, 16, 16, expand=6)) == 96
    assert mid_channels(BlockSpec("resnet_bottleneck", 8, 64, 256, expand=0.25)) == 64
    assert BlockSpec("mbv2", 8, 16, 16).residual and not BlockSpec("mbv2", 8, 16, 16, stride=2).residual
    assert not BlockSpec("mbv1", 8, 16, 16).residual


def test_chain_checks_widths_resolutions_and_head_position():
    check_chain(CHAIN)
    assert chain_key(CHAIN).count("+") == len(CHAIN) - 1
    bad = [CHAIN[0], BlockSpec("mbv2", 16, 24, 24)]
    with pytest.raises(GenomeError, match="do not fit"):
        check_chain(bad)
    with pytest.raises(GenomeError, match="head"):
        check_chain([BlockSpec("head", 4, 8, 8, 1), BlockSpec("head", 1, 8, 8, 1)])


def test_registry_lists_every_type_and_refuses_duplicates():
    assert sorted(list_blocks()) == sorted(BLOCK_TYPES)
    assert list_blocks("mb*") == ["mbv1", "mbv2", "mbv3"]
    with pytest.raises(ConfigError, match="already registered"):
        register_block("mbv2")(lambda s: nn.Identity())
    with pytest.raises(GenomeError, match="block type"):
        create_block("nope-r8-i8-o8-k3-s1-e1")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key())
def test_torch_block_output_shape(spec):
    block = create_block(spec).eval()
    y = block(torch.randn(2, spec.cin, spec.resolution, spec.resolution))
    if spec.type == "head":
        assert tuple(y.shape) == (2, spec.cout)
    else:
        assert tuple(y.shape) == (2, spec.cout, spec.out_resolution, spec.out_resolution)


def _torch_conv_stats(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """Parameters and MACs of convs/linears after BN folding, counted from the real module."""
    macs = params = 0
    def hook(m, inp, out):
        nonlocal macs, params
        w = m.weight
        params += w.numel() + w.shape[0]
        macs += w.numel() * (out.shape[2] * out.shape[3] if out.dim() == 4 else 1)
    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    module.eval()(torch.randn(1, *shape))
    for h in hs:
        h.remove()
    return macs, params


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key())
def test_cost_estimate_matches_module(spec):
    macs, params = _torch_conv_stats(create_block(spec), (spec.cin, spec.resolution, spec.resolution))
    feats = spec_features(spec)
    assert feats["macs"] == macs
    assert feats["params"] == params
    assert feats["flops"] == 2 * macs and feats["mem_elems"] > feats["params"]
    assert feats[f"type_{spec.type}"] == 1.0 and sum(feats[f"type_{t}"] for t in BLOCK_TYPES) == 1.0


def test_cost_ops_reflect_structure():
    kinds = lambda s: [o.kind for o in block_ops(s)]  # noqa: E731
    assert "hswish" in kinds(BlockSpec("mbv3", 8, 16, 16, expand=4))
    assert "hswish" not in kinds(BlockSpec("mbv2", 8, 16, 16, expand=4))
    assert kinds(BlockSpec("mbv2", 8, 16, 16, expand=4))[-1] == "add"
    assert "add" not in kinds(BlockSpec("mbv2", 8, 16, 16, stride=2, expand=4))
    assert kinds(BlockSpec("mbv2", 8, 16, 16, expand=1))[0] == "dwconv"  # no expand conv at e1
    assert "sigmoid" in kinds(BlockSpec("fused_mb_se", 8, 16, 16, expand=2))


def test_build_chain_runs_end_to_end():
    net = build_chain(CHAIN).eval()
    y = net(torch.randn(1, 3, 32, 32))
    assert tuple(y.shape) == (1, 10)
    assert len(net) == len(CHAIN)
    with pytest.raises(GenomeError):
        build_chain([CHAIN[0], CHAIN[2]])


@pytest.mark.tflite
def test_keras_twins_match_torch_shapes():
    from nasq.blocks.keras_blocks import build_keras_chain, create_keras_block

    for spec in SPECS:
        tb = create_block(spec).eval()
        x = np.random.default_rng(0).standard_normal((1, spec.cin, spec.resolution, spec.resolution))
        ty = tb(torch.from_numpy(x.astype(np.float32))).detach().numpy()
        kb = create_keras_block(spec)
        ky = np.asarray(kb(x.transpose(0, 2, 3, 1).astype(np.float32)))
        expect = ty.shape if ty.ndim == 2 else (ty.shape[0], ty.shape[2], ty.shape[3], ty.shape[1])
        assert ky.shape == expect, spec.key()
    model = build_keras_chain(CHAIN, batch=1)
    assert tuple(model.output.shape) == (1, 10)


def test_keras_twins_without_tensorflow_name_the_install(monkeypatch):
    import sys

    from nasq.blocks import keras_blocks

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    if "keras" not in sys.modules:
        monkeypatch.setitem(sys.modules, "keras", None)  # never leave a half-imported Keras behind
    with pytest.raises(ConfigError, match=r"pip install nasq\[tflite\]"):
        keras_blocks.build_keras_chain(CHAIN)
