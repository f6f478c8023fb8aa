"""ONNX QDQ export (nasq.deploy.onnx_export): the LSQ+ scales reach the file, ONNX Runtime fuses the QDQ
pairs into integer kernels and agrees with the fake-quant supernet (SpaceEvo §5 deployment)."""

from __future__ import annotations

import collections
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from nasq.bkd.teacher import prepare_images
from nasq.data import load_dataset
from nasq.deploy import extract_quantized_subnet
from nasq.deploy.onnx_export import export_onnx_int8
from nasq.deploy.quant_subnet import FrozenActQuant, QConv2d
from nasq.errors import ConfigError
from nasq.supernet import build_supernet, enable_qat, recalibrate_bn

torch.set_num_threads(1)
SPACE = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck_se:32-40"  # hswish, SE gates, shortcut conv
FP32_STEPS, QAT_STEPS = 60, 20  # Adam steps of the smallest subnet before / after enable_qat


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The smallest subnet trained a few fp32 then QAT steps on digits, its quantized extraction, its
    fake-quant logits on 300 held-out images, and its exported file."""
    d = load_dataset("digits")
    x, y = prepare_images(d.train.tensors[0], 16), d.train.tensors[1]
    torch.manual_seed(0)
    net = build_supernet(SPACE, "spaceevo-tiny")
    sub = net.set_active(net.smallest())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for t in range(FP32_STEPS + QAT_STEPS):
        if t == FP32_STEPS:
            enable_qat(net, x[:128])
            net.set_active(sub)
        i = torch.randint(0, len(x), (128,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(net(x[i]), y[i]).backward()
        opt.step()
    recalibrate_bn(net, [x[:256], x[256:512]], 2)  # the subnet's own BN statistics (§5 evaluation)
    net.eval()
    images = prepare_images(d.test.tensors[0][:300], 16)
    with torch.no_grad():
        logits = net(images).numpy()
    qnet = extract_quantized_subnet(net)
    folder = tmp_path_factory.mktemp("onnx")
    paths = {w: export_onnx_int8(qnet, 16, folder / f"subnet_{w}.onnx", weight_type=w)
             for w in ("int8", "uint8")}
    return qnet, images, logits, paths


def _session(path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=None) -> ort.InferenceSession:
    opts = ort.SessionOptions()  # as nasq.latency.engines.ort_runner sets them
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _predict(sess: ort.InferenceSession, images: torch.Tensor) -> np.ndarray:
    return np.concatenate([sess.run(None, {"x": images[i:i + 1].numpy()})[0] for i in range(len(images))])


def _act_calls(qnet, x) -> list[tuple[float, int]]:
    calls = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: calls.append((float(mod.scale), int(mod.zero_point))))
             for m in qnet.modules() if isinstance(m, FrozenActQuant)]
    with torch.no_grad():
        qnet(x)
    for h in hooks:
        h.remove()
    return calls


def _folded_weight_scales(qnet, x) -> list[torch.Tensor]:
    """Per conv, in call order: its LSQ+ weight scales times |γ/σ| of the BN after it (if any)."""
    gain = {id(m[0]): (m[1].weight / torch.sqrt(m[1].running_var + m[1].eps)).abs()
            for m in qnet.modules() if isinstance(m, torch.nn.Sequential) and len(m) > 1
            and isinstance(m[0], QConv2d) and isinstance(m[1], torch.nn.BatchNorm2d)}
    scales = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: scales.append(mod.wq.scale * gain.get(id(mod), 1.0)))
             for m in qnet.modules() if isinstance(m, QConv2d)]
    with torch.no_grad():
        qnet(x)
    for h in hooks:
        h.remove()
    return scales


def test_the_file_carries_the_lsq_scales_and_zero_points(trained):
    qnet, images, _, paths = trained
    graph = onnx.load(str(paths["int8"])).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]  # activations only: weights are int8
    got = [(float(inits[n.input[1]]), int(inits[n.input[2]])) for n in quantize]
    want = _act_calls(qnet, images[:1])
    want.append(want[-1])  # the head's pool_q is written before and after the flatten (same integers)
    assert got == want  # every activation quantizer, in call order, its own scale and zero point
    assert all(inits[n.input[2]].dtype == np.uint8 for n in quantize)
    producer = {o: n for n in graph.node for o in n.output}
    weights = [producer[n.input[1]] for n in graph.node if n.op_type == "Conv"]
    want = _folded_weight_scales(qnet, images[:1])
    assert len(weights) == len(want) > 10
    for dq, scale in zip(weights, want):  # BN folded into the per-channel weight scale s·|γ/σ|
        assert dq.op_type == "DequantizeLinear"
        q = inits[dq.input[0]]
        assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127
        np.testing.assert_allclose(inits[dq.input[1]], scale.numpy(), rtol=1e-6)
    biases = [producer[n.input[2]] for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert all(b.op_type == "DequantizeLinear" and inits[b.input[0]].dtype == np.int32 for b in biases)


@pytest.mark.parametrize("weight_type", ["int8", "uint8"])
def test_onnx_runtime_int8_agrees_with_the_fake_quant_supernet(trained, weight_type, tmp_path):
    _, images, logits, paths = trained
    sess = _session(paths[weight_type], optimized=tmp_path / "optimized.onnx")
    out = _predict(sess, images)
    agree = float((out.argmax(1) == logits.argmax(1)).mean())
    assert len(images) >= 200 and agree >= 0.99, agree
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] >= 8 and ops["QLinearAdd"] + ops["QLinearMul"] >= 2, ops  # fused, integer
    assert ops["QGemm"] == 1 and ops["QLinearGlobalAveragePool"] >= 1 and "GlobalAveragePool" not in ops, ops


def test_uint8_weights_run_the_qdq_reference_exactly_in_the_fused_kernels(trained):
    _, images, _, paths = trained
    fused = _predict(_session(paths["uint8"]), images[:50])
    reference = _predict(_session(paths["uint8"], ort.GraphOptimizationLevel.ORT_DISABLE_ALL), images[:50])
    np.testing.assert_allclose(fused, reference, atol=1e-3)  # no U8S8 int16 saturation (AVX2 without VNNI)


def test_scales_other_than_the_lsq_ones_disagree(trained, tmp_path):
    qnet, images, logits, _ = trained
    wrong = copy.deepcopy(qnet)
    for m in wrong.modules():
        if isinstance(m, FrozenActQuant):
            m.scale.fill_(1.0)  # an exporter that drops the learnt scales for a default
            m.zero_point.zero_()
    out = _predict(_session(export_onnx_int8(wrong, 16, tmp_path / "wrong.onnx")), images)
    assert float((out.argmax(1) == logits.argmax(1)).mean()) < 0.5


def test_a_plain_session_loads_the_file_and_bad_arguments_are_refused(trained, tmp_path):
    qnet, images, logits, paths = trained
    out = ort.InferenceSession(str(paths["int8"])).run(None, {"x": images[:1].numpy()})[0]
    assert out.shape == (1, 10) and out.argmax() == logits[0].argmax()
    with pytest.raises(ConfigError, match="resolution"):
        export_onnx_int8(qnet, 0, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="weight type"):
        export_onnx_int8(qnet, 16, tmp_path / "x.onnx", weight_type="int4")


def test_the_latency_tools_time_the_file_as_it_is(trained, monkeypatch):
    from nasq.latency import engines, measure

    _, _, _, paths = trained
    monkeypatch.setattr(engines, "quantize_onnx", lambda *a, **k: pytest.fail("re-quantized the file"))
    m = measure.measure_onnx(paths["int8"], "ort-int8", repeats=3, warmup=1)
    assert m.engine == "ort-int8" and m.key == paths["int8"].name and m.repeats == 3
    assert m.fingerprint["activation_type"] == "uint8"  # read from the file's QuantizeLinear zero points
