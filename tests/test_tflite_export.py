"""TFLite full-integer export of trained subnets: weights copied into the Keras twin, LiteRT predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.spaces.spaceevo import SPACEEVO_TYPES, space_from_name
from nasq.supernet.model import Supernet

pytestmark = pytest.mark.tflite
HYPER = "spaceevo-tiny"
MIXED = "mbv3:8-16|fused_mb_se:16-24|resnet_bottleneck_se:24-32"


@pytest.fixture(scope="module")
def tfx():
    """The export module, with TensorFlow loaded (skips when it is not installed).

    TensorFlow must be imported through ``keras()``, which loads Triton first (see keras_blocks).
    """
    from importlib.util import find_spec

    if find_spec("tensorflow") is None or find_spec("ai_edge_litert") is None:
        pytest.skip("needs TensorFlow and ai-edge-litert: pip install nasq[tflite]")
    from nasq.blocks.keras_blocks import keras
    from nasq.deploy import tflite_export

    keras()
    return tflite_export


def _random_bn(module: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.3 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.3 * torch.randn(n, generator=gen))


def prepare(x: torch.Tensor) -> torch.Tensor:
    """Digits (1 x 8 x 8) as the tiny stem wants them (3 x 16 x 16)."""
    from nasq.bkd.teacher import prepare_images

    return prepare_images(x, 16)


def _rel(keras_out, torch_out: torch.Tensor) -> float:
    t = torch_out.detach().numpy()
    if t.ndim == 4:
        t = t.transpose(0, 2, 3, 1)
    return float(np.abs(np.asarray(keras_out) - t).max() / np.abs(t).max())


@pytest.mark.parametrize("block_type", SPACEEVO_TYPES)
def test_copied_twin_equals_torch_fp32(tfx, block_type):
    space = space_from_name(HYPER)
    net = Supernet.from_string(space.encode(space.homogeneous(block_type)), HYPER)
    chain = net.extract_subnet(net.sample(np.random.default_rng(SPACEEVO_TYPES.index(block_type)))).eval()
    _random_bn(chain)
    specs = net.space.blocks(net.active)
    assert any(s.stride == 2 and s.kernel > 1 for s in specs)  # the padding case is exercised
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = chain(x)
    twin = tfx.build_twin(chain, specs, batch=None)
    assert _rel(twin(x.permute(0, 2, 3, 1).numpy(), training=False), want) < 1e-4


@pytest.mark.parametrize("key", ["mbv2-r16-i8-o16-k3-s2-e3", "fused_mb_se-r8-i16-o16-k5-s2-e3"])
def test_torch_padding_only_where_same_differs(tfx, key):
    from nasq.blocks.keras_blocks import build_keras_chain
    from nasq.blocks.spec import BlockSpec
    from nasq.blocks.torch_blocks import create_block

    spec = BlockSpec.from_key(key)
    block = create_block(spec).eval()
    _random_bn(block)
    x = torch.randn(1, spec.cin, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = block(x)
    latency_twin, exact_twin = build_keras_chain([key]), build_keras_chain([key], torch_padding=True)
    pads = lambda m: sum(type(l).__name__ == "ZeroPadding2D" for l in m.layers)  # noqa: E731
    assert (pads(latency_twin), pads(exact_twin)) == (0, 1)
    for twin in (latency_twin, exact_twin):
        tfx.copy_weights(block, twin)
    xn = x.permute(0, 2, 3, 1).numpy()
    assert _rel(exact_twin(xn, training=False), want) < 1e-4
    assert _rel(latency_twin(xn, training=False), want) > 1e-2  # "same" pads stride 2 asymmetrically


def test_copy_weights_refuses_other_chain(tfx):
    from nasq.blocks.keras_blocks import build_keras_chain
    from nasq.blocks.torch_blocks import create_block
    from nasq.errors import ConfigError

    twin = build_keras_chain(["mbv2-r8-i8-o8-k3-s1-e6"])
    with pytest.raises(ConfigError, match="same BlockSpec chain"):
        tfx.copy_weights(create_block("mbv2-r8-i8-o8-k3-s1-e3"), twin)


@pytest.fixture(scope="module")
def trained():
    """A spaceevo-tiny supernet trained one epoch (20 sandwich steps) on digits: its largest subnet's
    specs and chain (BN recalibrated), 128 training images for calibration, the test split (360 images)."""
    from torch.utils.data import DataLoader, TensorDataset

    from nasq.bkd.teacher import prepare_images
    from nasq.data import load_dataset
    from nasq.supernet.bn import recalibrate_bn
    from nasq.supernet.train import SupernetTrainSettings, train_epoch

    torch.manual_seed(0)
    splits = load_dataset("digits", seed=0)
    xtr, ytr = splits.train.tensors
    loader = DataLoader(TensorDataset(prepare_images(xtr, 16), ytr), batch_size=64, shuffle=True)
    net = Supernet.from_string(MIXED, HYPER)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    train_epoch(net.train(), loader, opt, SupernetTrainSettings(n_random=0))
    chain = net.extract_subnet(net.largest())
    recalibrate_bn(chain, loader, 8)
    return net.space.blocks(net.active), chain.eval(), xtr[:128], splits.test.tensors


def test_int8_tflite_agrees_with_torch(tfx, trained, tmp_path):
    specs, chain, calib, (xte, yte) = trained
    with torch.no_grad():
        want = chain(prepare(xte)).argmax(1).numpy()
    assert len(xte) >= 200 and (want == yte.numpy()).mean() > 0.8  # a trained net, not a constant one
    x8 = prepare(xte[:8])
    twin = tfx.build_twin(chain, specs, batch=None)
    assert _rel(twin(x8.permute(0, 2, 3, 1).numpy(), training=False), chain(x8)) < 1e-4
    path = tfx.export_tflite_int8(chain, specs, calib, tmp_path / "subnet.tflite")
    logits = tfx.tflite_predict(path, xte)
    assert logits.shape == (len(xte), 10) and logits.dtype == np.float32
    assert (logits.argmax(1) == want).mean() >= 0.95


def test_int8_without_copied_weights_disagrees(tfx, trained, tmp_path, monkeypatch):
    specs, chain, calib, (xte, _) = trained
    monkeypatch.setattr(tfx, "copy_weights", lambda *a: None)  # the twin keeps its random weights
    path = tfx.export_tflite_int8(chain, specs, calib[:32], tmp_path / "random.tflite")
    with torch.no_grad():
        want = chain(prepare(xte)).argmax(1).numpy()
    assert (tfx.tflite_predict(path, xte).argmax(1) == want).mean() < 0.5
