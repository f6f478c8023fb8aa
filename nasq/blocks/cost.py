"""Op-level cost estimates of a block: MACs, parameters and memory traffic per operator kind.

nn-Meter and SpaceEvo (Sec. 4, latency predictor) predict a block's latency from its configuration plus
derived costs. Each block is expanded here into the operators its PyTorch module
(:mod:`nasq.blocks.torch_blocks`) runs after BN folding, so a predictor can learn a per-op-kind cost:
on this CPU a depthwise MAC, a dense MAC and an element-wise op cost very different amounts in INT8.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasq.blocks.spec import BLOCK_TYPES, BlockSpec, mid_channels, se_channels

OP_KINDS: tuple[str, ...] = (
    "conv1x1", "convkxk", "dwconv", "fc", "relu", "hswish", "hsigmoid", "sigmoid", "add", "mul", "gap")


@dataclass(frozen=True)
class OpCost:
    """One operator of a block: kind, multiply-accumulates, elements read and written, parameters."""

    kind: str
    macs: int
    in_elems: int
    out_elems: int
    params: int


def _conv(cin: int, cout: int, k: int, hw_in: int, hw_out: int, groups: int = 1) -> OpCost:
    kind = "dwconv" if groups > 1 else ("conv1x1" if k == 1 else "convkxk")
    weights = cout * (cin // groups) * k * k
    return OpCost(kind, hw_out * weights, hw_in * cin, hw_out * cout, weights + cout)


def _elementwise(kind: str, elems: int, inputs: int = 1) -> OpCost:
    return OpCost(kind, 0, inputs * elems, elems, 0)


def _se(channels: int, hw: int, gate: str) -> list[OpCost]:
    sq = se_channels(channels)
    return [OpCost("gap", 0, hw * channels, channels, 0),
            OpCost("fc", channels * sq, channels, sq, channels * sq + sq), _elementwise("relu", sq),
            OpCost("fc", sq * channels, sq, channels, sq * channels + channels), _elementwise(gate, channels),
            OpCost("mul", 0, hw * channels + channels, hw * channels, 0)]


def block_ops(spec: BlockSpec) -> list[OpCost]:
    """Expand ``spec`` into the operators its module runs (BN folded into convs), in execution order."""
    hw, ho = spec.resolution ** 2, spec.out_resolution ** 2
    cin, cout, k, mid = spec.cin, spec.cout, spec.kernel, mid_channels(spec)
    t = spec.type
    ops: list[OpCost] = []
    if t == "stem":
        ops += [_conv(cin, cout, k, hw, ho), _elementwise("relu", ho * cout)]
    elif t == "head":
        ops += [OpCost("gap", 0, hw * cin, cin, 0), OpCost("fc", cin * cout, cin, cout, cin * cout + cout)]
    elif t == "mbv1":
        ops += [_conv(cin, cin, k, hw, ho, groups=cin), _elementwise("relu", ho * cin),
                _conv(cin, cout, 1, ho, ho), _elementwise("relu", ho * cout)]
    elif t in ("mbv2", "mbv3"):
        act = "hswish" if t == "mbv3" else "relu"
        if spec.expand != 1.0:
            ops += [_conv(cin, mid, 1, hw, hw), _elementwise(act, hw * mid)]
        ops += [_conv(mid, mid, k, hw, ho, groups=mid), _elementwise(act, ho * mid)]
        if t == "mbv3":
            ops += _se(mid, ho, "hsigmoid")
        ops.append(_conv(mid, cout, 1, ho, ho))
    elif t in ("fused_mb", "fused_mb_se"):
        ops += [_conv(cin, mid, k, hw, ho), _elementwise("relu", ho * mid)]
        if t == "fused_mb_se":
            ops += _se(mid, ho, "sigmoid")
        ops.append(_conv(mid, cout, 1, ho, ho))
    elif t in ("resnet_bottleneck", "resnet_bottleneck_se"):
        ops += [_conv(cin, mid, 1, hw, hw), _elementwise("relu", hw * mid),
                _conv(mid, mid, k, hw, ho), _elementwise("relu", ho * mid), _conv(mid, cout, 1, ho, ho)]
        if t == "resnet_bottleneck_se":
            ops += _se(cout, ho, "sigmoid")
        if not spec.residual:
            ops.append(_conv(cin, cout, 1, hw, ho) if spec.stride == 1 else _strided_shortcut(cin, cout, hw, ho))
        ops += [_elementwise("add", ho * cout, 2), _elementwise("relu", ho * cout)]
        return ops
    else:  # pragma: no cover - BlockSpec validates the type
        raise AssertionError(t)
    if spec.residual:
        ops.append(_elementwise("add", ho * cout, 2))
    return ops


def _strided_shortcut(cin: int, cout: int, hw: int, ho: int) -> OpCost:
    op = _conv(cin, cout, 1, hw, ho)
    return OpCost(op.kind, op.macs, ho * cin, op.out_elems, op.params)  # a strided 1x1 reads 1/s^2 of input


def spec_features(spec: BlockSpec) -> dict[str, float]:
    """Features of one block for a latency regressor (SpaceEvo Sec. 4 / nn-Meter kernel features).

    Returns the spec's own settings, a one-hot of its type, and per op kind the MACs (``macs_<kind>``) and
    output elements (``elems_<kind>``), plus totals: ``macs``, ``flops`` (2 x MACs), ``params``,
    ``mem_elems`` (elements read + written + parameters, a memory-traffic proxy) and ``n_ops``.
    """
    ops = block_ops(spec)
    feats: dict[str, float] = {
        "resolution": float(spec.resolution), "out_resolution": float(spec.out_resolution),
        "cin": float(spec.cin), "cout": float(spec.cout), "kernel": float(spec.kernel),
        "stride": float(spec.stride), "expand": spec.expand, "mid": float(mid_channels(spec)),
        "residual": float(spec.residual),
    }
    feats.update({f"type_{t}": float(spec.type == t) for t in BLOCK_TYPES})
    for kind in OP_KINDS:
        feats[f"macs_{kind}"] = float(sum(o.macs for o in ops if o.kind == kind))
        feats[f"elems_{kind}"] = float(sum(o.out_elems for o in ops if o.kind == kind))
    feats["macs"] = float(sum(o.macs for o in ops))
    feats["flops"] = 2.0 * feats["macs"]
    feats["params"] = float(sum(o.params for o in ops))
    feats["mem_elems"] = float(sum(o.in_elems + o.out_elems + o.params for o in ops))
    feats["n_ops"] = float(len(ops))
    return feats
