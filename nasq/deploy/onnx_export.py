"""ONNX QDQ export of a quantized subnet for ONNX Runtime's INT8 kernels (SpaceEvo §5 deployment; LSQ+).

:func:`export_onnx_int8` writes the network of :func:`~nasq.deploy.quant_subnet.extract_quantized_subnet`
in the QDQ form that ``onnxruntime.quantization.quantize_static`` writes and that the latency predictor
was measured on (:mod:`nasq.latency.engines`: opset 17, uint8 activations, per-channel int8 weights,
int32 biases), but with the **LSQ+ scales and zero points** instead of a calibration:

1. :func:`fold_for_export` folds each BatchNorm into its conv. The weight integers ``q`` stay those of
   the fake-quant forward; the per-channel scale becomes ``s·|γ/σ|`` and the sign of ``γ`` moves into
   ``q`` (symmetric, so still in [-127, 127]); the bias becomes ``β − μ·γ/σ``. Every weight is snapped
   to its grid, so the [-128, 127] range ONNX allows gives the same integers as LSQ+'s [-127, 127].
2. ``torch.onnx.export`` writes every frozen quantizer (torch's ``fake_quantize_per_*_affine``) as a
   QuantizeLinear/DequantizeLinear pair.
3. :func:`finish_qdq` stores each weight as an int8 initializer read by its DequantizeLinear (the Q of a
   constant folded away) and each conv / linear bias as int32 at scale ``s_x·s_w`` behind a
   DequantizeLinear, the pattern ONNX Runtime fuses into QLinearConv / QGemm.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasq.deploy.quant_subnet import FrozenWeightQuant, QConv2d, QuantHead
from nasq.errors import ConfigError, bad_token
from nasq.latency.engines import OPSET

EPS = 1e-8  # smallest folded scale (a BN with γ = 0)
WEIGHT_TYPES = ("int8", "uint8")  # ONNX weight integer types (uint8: the int8 values + 128)


@torch.no_grad()
def _integers(w: torch.Tensor, wq: FrozenWeightQuant) -> torch.Tensor:
    """The weight integers of the fake-quant forward (in [-127, 127])."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    return torch.round(wq(w) / wq.scale.view(shape))


@torch.no_grad()
def _fold(conv: QConv2d, bn: nn.BatchNorm2d) -> QConv2d:
    """``conv`` followed by ``bn`` (eval statistics) as one QConv2d on the same weight integers."""
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    q = _integers(conv.weight, conv.wq)
    sign = torch.where(g < 0, -1.0, 1.0)
    scale = (conv.wq.scale * g.abs()).clamp_min(EPS)
    bias = bn.bias - bn.running_mean * g + (0 if conv.bias is None else conv.bias * g)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       groups=conv.groups, bias=True)
    folded.weight.copy_(q * (sign * scale).view(-1, 1, 1, 1))
    folded.bias.copy_(bias)
    return QConv2d.wrap(folded, FrozenWeightQuant(scale, -128, 127), conv.aq)


@torch.no_grad()
def _snap(wq: FrozenWeightQuant, weight: nn.Parameter) -> None:
    """Put ``weight`` on its quantization grid and open the range to ONNX's [-128, 127] (same integers)."""
    weight.copy_(wq(weight))
    wq.qmin = -128


class _ExportHead(nn.Module):
    """A :class:`QuantHead` that quantizes the pooled vector before *and* after the flatten (the same
    integers: re-quantizing with the same scale and zero point is the identity), so ORT fuses the pool
    into QLinearGlobalAveragePool and the linear layer into QGemm, as in ``quantize_static`` graphs."""

    def __init__(self, head: QuantHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head
        v = h.pool_q(torch.flatten(h.pool_q(h.pool(h.in_q(x))), 1))
        return torch.nn.functional.linear(v, h.wq(h.fc.weight), h.fc.bias)


def fold_for_export(qnet: nn.Module) -> nn.Module:
    """A copy of a quantized subnet with BatchNorm folded into the convs and every weight on its grid
    (§5 deployment); its output equals ``qnet``'s up to float rounding of the fold."""
    net = copy.deepcopy(qnet).eval()
    for m in list(net.modules()):
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], QConv2d) \
                and isinstance(m[1], nn.BatchNorm2d):
            m[0], m[1] = _fold(m[0], m[1]), nn.Identity()
        elif isinstance(m, QConv2d) and m.wq.qmin != -128:
            _snap(m.wq, m.weight)
        for name, child in m.named_children():
            if isinstance(child, QuantHead):
                _snap(child.wq, child.fc.weight)
                setattr(m, name, _ExportHead(child))
    return net


def export_onnx_int8(quantized_subnet: nn.Module, resolution: int, path: str | Path, channels: int = 3,
                     weight_type: str = "int8") -> Path:
    """Write ``quantized_subnet`` (:func:`~nasq.deploy.quant_subnet.extract_quantized_subnet`) as an
    ONNX QDQ INT8 model with its LSQ+ scales (SpaceEvo §5), input ``x`` of shape
    ``(1, channels, resolution, resolution)``, output ``y``; returns the path.

    Args:
        weight_type: ``"int8"`` (U8S8, what the latency predictor measured; exact on CPUs with VNNI) or
            ``"uint8"``: the same integers shifted by 128 (zero point 128), which ONNX Runtime runs with
            its U8U8 kernels; these do not saturate on AVX2 CPUs without VNNI, where U8S8's
            ``vpmaddubsw`` adds pairs of products in int16 and can clip full-range LSQ+ weights.

    Raises:
        ConfigError: a resolution that is not a positive integer, or an unknown weight type.
    """
    import onnx

    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer (the subnet's input size), "
                          f"got {resolution!r}")
    if weight_type not in WEIGHT_TYPES:
        raise ConfigError(bad_token("weight type", weight_type, list(WEIGHT_TYPES)))
    path = Path(path)
    net = fold_for_export(quantized_subnet)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=".*feature will be removed")
        torch.onnx.export(net, (torch.zeros(1, channels, resolution, resolution),), str(path),
                          opset_version=OPSET, dynamo=False, input_names=["x"], output_names=["y"],
                          do_constant_folding=True)
    model = onnx.load(str(path))
    finish_qdq(model.graph, weight_type)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def finish_qdq(graph, weight_type: str = "int8") -> None:
    """Weights as ``weight_type`` initializers behind DequantizeLinear, conv / linear biases as int32 at
    scale ``s_x·s_w`` behind DequantizeLinear (the ``quantize_static`` QDQ pattern ORT fuses); in place."""
    from onnx import numpy_helper

    _constants_as_initializers(graph)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    _fold_constant_quantize(graph, consts, weight_type == "uint8")
    _quantize_biases(graph, consts)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _quantize_biases(graph, consts: dict) -> None:
    """Each float bias of a Conv / Gemm whose input and weight are dequantized becomes int32 at scale
    ``s_x·s_w`` (per output channel) behind a DequantizeLinear, as QLinearConv / QGemm take it."""
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in consts:
            continue
        dqx, dqw = producer.get(node.input[0]), producer.get(node.input[1])
        if any(n is None or n.op_type != "DequantizeLinear" for n in (dqx, dqw)):
            continue
        scale = (consts[dqx.input[1]] * consts[dqw.input[1]]).astype(np.float32).reshape(-1)
        q = np.round(consts[node.input[2]].astype(np.float64) / scale)
        name = node.input[2]
        q = q.clip(-2 ** 31, 2 ** 31 - 1).astype(np.int32)
        _add_dequantize(graph, f"{name}_quantized", q, scale, np.zeros_like(q), name + "_dq")
        node.input[2] = name + "_dq"


def _constants_as_initializers(graph) -> None:
    """Constant nodes become initializers; ``Identity(initializer)`` nodes (torch's deduplication of
    equal tensors) are bypassed, so every scale, zero point and weight is an initializer."""
    from onnx import numpy_helper

    for node in [n for n in graph.node if n.op_type == "Constant"]:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t),
                                                         node.output[0]))
        graph.node.remove(node)
    inits = {i.name for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.output[0] in alias]:
        graph.node.remove(node)
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = alias.get(name, name)


def _fold_constant_quantize(graph, consts: dict, shift_to_uint8: bool = False) -> None:
    """Replace ``QuantizeLinear(constant weight)`` by its integer result as an initializer; with
    ``shift_to_uint8`` int8 integers and zero points move up by 128 (the same dequantized values)."""
    from onnx import numpy_helper

    for node in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in consts]:
        w, scale, zp = (consts[i] for i in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(w / scale.reshape(shape)) + zp.reshape(shape), info.min, info.max)
        q = q.astype(zp.dtype)
        if shift_to_uint8 and zp.dtype == np.int8:
            q, zp = ((a.astype(np.int16) + 128).astype(np.uint8) for a in (q, zp))
            zp_name = node.output[0] + "_zero_point"
            graph.initializer.append(numpy_helper.from_array(zp, zp_name))
            for dq in graph.node:
                if dq.op_type == "DequantizeLinear" and dq.input[0] == node.output[0]:
                    dq.input[2] = zp_name
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        graph.node.remove(node)


def _add_dequantize(graph, name: str, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, out: str) -> None:
    from onnx import helper, numpy_helper

    for arr, suffix in ((q, ""), (scale, "_scale"), (zp, "_zero_point")):
        graph.initializer.append(numpy_helper.from_array(arr, name + suffix))
    node = helper.make_node("DequantizeLinear", [name, name + "_scale", name + "_zero_point"], [out],
                            name=out, axis=0)
    graph.node.insert(0, node)


__all__ = ["export_onnx_int8", "finish_qdq", "fold_for_export"]
