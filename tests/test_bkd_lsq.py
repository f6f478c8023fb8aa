"""LSQ+ fake quantization (nasq.quant.lsq) against an independent integer computation and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.quant.lsq import LsqActQuant, LsqWeightQuant, quantizer_parameters, set_quant


def _ref(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """ONNX QuantizeLinear + DequantizeLinear in integers: round half to even, saturate."""
    q = np.clip(np.rint(x / scale) + zp, qmin, qmax).astype(np.int64)
    return ((q - zp) * scale).astype(np.float32)


def _act(scale: float, zp: float) -> LsqActQuant:
    q = LsqActQuant()
    with torch.no_grad():
        q.scale.fill_(scale)
        q.zero_point.fill_(zp)
    q.initialized.fill_(1)
    q.enabled = True
    return q


def test_activation_quant_matches_integer_reference_on_ties_and_clamps():
    s, z = 0.125, 3  # a power of two: x / s is exact, so ties are real ties
    steps = np.array([-3.5, -2.5, -0.5, 0.5, 1.5, 2.5, 3.5, 100.0, 251.5, 252.5, 300.0, -4.0, -10.0])
    x = (steps * s).astype(np.float32)
    got = _act(s, z)(torch.from_numpy(x)[None]).detach().numpy()[0]
    want = _ref(x, np.float32(s), np.int64(z), 0, 255)
    np.testing.assert_array_equal(got, want)
    # half to even: 2.5 -> 2 and 3.5 -> 4 steps (half away from zero would give 3 and 4)
    assert got[5] == pytest.approx(2 * s) and got[6] == pytest.approx(4 * s)
    assert got[-1] == pytest.approx(-z * s)  # saturates at q = 0


def test_activation_zero_point_is_an_integer_rounded_half_to_even():
    q = _act(0.1, 4.5)  # a learnt offset between levels: the forward pass uses round_half_even(4.5) = 4
    assert q.qparams() == (pytest.approx(0.1), 4)
    x = np.linspace(-1, 2, 31, dtype=np.float32)
    got = q(torch.from_numpy(x)[None]).detach().numpy()[0]
    np.testing.assert_allclose(got, _ref(x, np.float32(0.1), np.int64(4), 0, 255), atol=1e-6)


def test_weight_quant_per_channel_symmetric_with_sliced_channels():
    wq = LsqWeightQuant(6)
    scales = np.array([0.5, 0.25, 0.125, 0.0625, 1.0, 2.0], np.float32)
    with torch.no_grad():
        wq.scale.copy_(torch.from_numpy(scales))
    wq.initialized.fill_(1)
    wq.enabled = True
    rng = np.random.default_rng(0)
    w = (rng.integers(-140, 140, size=(4, 2, 3, 3)) + 0.5 * rng.integers(0, 2, size=(4, 2, 3, 3)))
    w = (w * scales[:4, None, None, None]).astype(np.float32)  # only the first 4 channels are active
    got = wq(torch.from_numpy(w)).detach().numpy()
    want = _ref(w, scales[:4, None, None, None], np.int64(0), -127, 127)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= -127 * scales[:4].max() - 1e-6  # symmetric: -128 is never used
    s, z = wq.qparams(4)
    np.testing.assert_array_equal(s.numpy(), scales[:4])
    assert z.dtype == torch.int32 and not z.any()


def test_fake_quant_matches_onnx_runtime_quantize_dequantize():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    x = np.random.default_rng(1).normal(0, 2, size=(1, 3, 5, 5)).astype(np.float32)
    q = LsqActQuant()
    q.enabled = True
    with torch.no_grad():
        q(torch.from_numpy(x))  # LSQ+ min/max initialisation
        q.zero_point.add_(0.3)  # a learnt, non-integer offset
    scale, zp = q.qparams()
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
        [numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(np.array(zp, np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = q(torch.from_numpy(x)).detach().numpy()
    # torch multiplies by 1/s where ONNX divides: equal up to one level at an exact tie
    assert np.mean(got == want) > 0.99 and np.max(np.abs(got - want)) <= scale * 1.0001


def test_lsq_scales_and_offset_receive_gradients_and_off_is_identity():
    q = _act(0.05, 10)
    x = torch.linspace(-3, 12, 200, requires_grad=True)[None]
    (q(x) ** 2).sum().backward()
    assert q.scale.grad is not None and q.scale.grad.abs() > 0
    assert q.zero_point.grad is not None and q.zero_point.grad.abs() > 0  # clamped values move the offset
    wq = LsqWeightQuant(4)
    wq.enabled = True
    w = torch.randn(3, 8, requires_grad=True)
    wq(w).pow(2).sum().backward()
    assert (wq.scale.grad[:3] != 0).all() and (wq.scale.grad[3] == 0)  # sliced: channel 3 untouched
    module = torch.nn.ModuleDict({"a": q, "w": wq})
    set_quant(module, False)
    y = torch.randn(2, 5)
    assert torch.equal(q(y), y) and len(quantizer_parameters(module)) == 3


def test_same_rounding_as_torch_fake_quantize_ops_on_exact_ties():
    """Power-of-two scales make x / s exact, so every half step is a true tie: LSQ+ must round them as
    ``torch.fake_quantize_per_channel_affine`` / ``per_tensor_affine`` do (half to even) and saturate alike."""
    rng = np.random.default_rng(2)
    scales = (2.0 ** -rng.integers(1, 7, size=5)).astype(np.float32)
    wq = LsqWeightQuant(5)
    with torch.no_grad():
        wq.scale.copy_(torch.from_numpy(scales))
    wq.initialized.fill_(1)
    wq.enabled = True
    steps = rng.integers(-150, 150, size=(5, 3, 3, 3)) + 0.5 * rng.integers(0, 2, size=(5, 3, 3, 3))
    w = torch.from_numpy((steps * scales[:, None, None, None]).astype(np.float32))
    want = torch.fake_quantize_per_channel_affine(w, torch.from_numpy(scales), torch.zeros(5, dtype=torch.int32),
                                                  0, -127, 127)
    assert torch.equal(wq(w).detach(), want)
    assert (np.abs(steps) % 1 == 0.5).sum() > 50  # the ties were really exercised (135 values)
    act = _act(0.25, 7)
    x = torch.from_numpy((np.arange(-40, 300, 0.5) * 0.25).astype(np.float32))[None]
    assert torch.equal(act(x).detach(), torch.fake_quantize_per_tensor_affine(x, 0.25, 7, 0, 255))
