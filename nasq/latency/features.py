"""Per-operation cost features of a block, for the additive latency model (SpaceEvo Sec. 4; nn-Meter).

A block is decomposed into the operations its PyTorch module runs (:func:`nasq.blocks.cost.block_ops`,
which mirrors :mod:`nasq.blocks.torch_blocks`), grouped into classes: dense k×k convs, depthwise convs,
pointwise (1×1) convs, squeeze-and-excitation, hardswish, residual adds, global pooling and the
classifier's linear layer. For each operation class the block's MACs and
output elements are counted; INT8 latency on a CPU is close to a non-negative linear function of these
counts per block type, which is what :class:`nasq.latency.cost_models.AdditiveCostModel` fits. The
correction model gets :func:`shape_features` (log sizes and the op mix) to catch what is not additive.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from nasq.blocks.cost import OpCost, block_ops
from nasq.blocks.spec import BLOCK_TYPES, BlockSpec, mid_channels

#: Columns of :func:`op_features`, in matrix order. MACs and elements are in millions.
OP_COLUMNS: tuple[str, ...] = (
    "block",            # 1 per block: session call, input quantize, output dequantize
    "nodes",            # number of graph operations (per-op dispatch cost)
    "io_elems",         # block input + output elements (quantize / dequantize at the boundary)
    "conv_macs", "conv_out",    # dense k×k convs (k > 1), stem included
    "dw_macs", "dw_out",        # depthwise convs
    "pw_macs", "pw_out",        # 1×1 convs (expand, project, shortcut)
    "se_elems", "se_macs",      # squeeze-excite: pooled + rescaled elements, its two FC layers
    "hswish_elems",             # elements through hardswish (no INT8 kernel on ORT)
    "add_elems",                # residual add
    "pool_elems", "linear_macs",  # head: global average pool, classifier
    "conv_px", "dw_px", "pw_px",  # output pixels of each conv class (per-position cost at small widths)
    "small_c_macs",             # MACs of convs with fewer than 32 input or output channels
    "dw_odd_macs", "conv_odd_macs", "pw_odd_macs",  # MACs of convs whose widths are not multiples
                                                    # of 16 (slower kernels: 24 channels cost more than 32)
)
_COL = {name: i for i, name in enumerate(OP_COLUMNS)}
#: Where each op kind of :func:`nasq.blocks.cost.block_ops` lands: (MACs column, elements column).
_KIND_COLUMNS: dict[str, tuple[str | None, str | None]] = {
    "convkxk": ("conv_macs", "conv_out"), "dwconv": ("dw_macs", "dw_out"), "conv1x1": ("pw_macs", "pw_out"),
    "hswish": (None, "hswish_elems"), "add": (None, "add_elems"),
    "relu": (None, None), "hsigmoid": (None, None), "sigmoid": (None, None),
}


def _add_op(acc: np.ndarray, op: OpCost, in_head: bool) -> None:
    """Accumulate one operator's MACs / elements into its class columns."""
    if op.kind == "relu":
        return  # fused into the preceding conv or add by the engine
    acc[_COL["nodes"]] += 1
    if op.kind == "fc":
        acc[_COL["linear_macs" if in_head else "se_macs"]] += op.macs / 1e6
    elif op.kind == "gap":
        acc[_COL["pool_elems" if in_head else "se_elems"]] += op.in_elems / 1e6
    elif op.kind == "mul":
        acc[_COL["se_elems"]] += op.out_elems / 1e6
    else:
        macs_col, elems_col = _KIND_COLUMNS[op.kind]
        if macs_col:
            acc[_COL[macs_col]] += op.macs / 1e6
        if elems_col:
            acc[_COL[elems_col]] += op.out_elems / 1e6


def conv_layers(spec: BlockSpec) -> list[tuple[str, int, int, int, int]]:
    """The block's convolutions as (class, cin, cout, kernel, output pixels), matching ``block_ops``."""
    r2, o2, k, t = spec.resolution ** 2, spec.out_resolution ** 2, spec.kernel, spec.type
    mid = mid_channels(spec)
    dense = "pw" if k == 1 else "conv"
    if t == "stem":
        return [(dense, spec.cin, spec.cout, k, o2)]
    if t == "mbv1":
        return [("dw", spec.cin, spec.cin, k, o2), ("pw", spec.cin, spec.cout, 1, o2)]
    if t in ("mbv2", "mbv3"):
        pre = [("pw", spec.cin, mid, 1, r2)] if spec.expand != 1.0 else []
        return pre + [("dw", mid, mid, k, o2), ("pw", mid, spec.cout, 1, o2)]
    if t in ("fused_mb", "fused_mb_se"):
        return [(dense, spec.cin, mid, k, o2), ("pw", mid, spec.cout, 1, o2)]
    if t in ("resnet_bottleneck", "resnet_bottleneck_se"):
        short = [] if spec.residual else [("pw", spec.cin, spec.cout, 1, r2 if spec.stride == 1 else o2)]
        return [("pw", spec.cin, mid, 1, r2), (dense, mid, mid, k, o2), ("pw", mid, spec.cout, 1, o2)] + short
    return []


@lru_cache(maxsize=65536)
def _op_vector(spec: BlockSpec) -> tuple[float, ...]:
    acc = np.zeros(len(OP_COLUMNS))
    acc[_COL["block"]] = 1.0
    for op in block_ops(spec):
        _add_op(acc, op, spec.type == "head")
    for kind, cin, cout, k, px in conv_layers(spec):
        acc[_COL[f"{kind}_px"]] += px / 1e6
        macs = px * cout * (1 if kind == "dw" else cin) * k * k / 1e6
        if cin % 16 or cout % 16:
            acc[_COL[f"{kind}_odd_macs"]] += macs
        if min(cin, cout) < 32:
            acc[_COL["small_c_macs"]] += macs
    out_hw = spec.out_resolution
    acc[_COL["io_elems"]] = (spec.cin * spec.resolution ** 2 + spec.cout * out_hw ** 2) / 1e6
    return tuple(float(v) for v in acc)


def op_features(spec: BlockSpec) -> dict[str, float]:
    """MACs and elements per operation class of one block (Sec. 4 additive cost model).

    Args:
        spec: the block.

    Returns:
        A dict keyed by :data:`OP_COLUMNS`; MACs and elements in millions.
    """
    return dict(zip(OP_COLUMNS, _op_vector(spec)))


def op_matrix(specs: list[BlockSpec]) -> np.ndarray:
    """Stack :func:`op_features` of ``specs`` into an (n, len(OP_COLUMNS)) matrix."""
    if not specs:
        return np.zeros((0, len(OP_COLUMNS)))
    return np.array([_op_vector(s) for s in specs], dtype=np.float64)


#: Columns of :func:`shape_features` after the one-hot block type.
SHAPE_COLUMNS: tuple[str, ...] = tuple(f"is_{t}" for t in BLOCK_TYPES) + (
    "log_res", "log_cin", "log_cout", "log_mid", "kernel", "stride", "expand",
    "log_macs", "dw_share", "pw_share", "conv_share", "log_io", "log_nodes")


def shape_features(specs: list[BlockSpec]) -> np.ndarray:
    """Features for the non-additive correction: one-hot type, log sizes and the op mix (Sec. 4)."""
    ops = op_matrix(specs)
    rows = []
    for spec, op in zip(specs, ops):
        onehot = [1.0 if spec.type == t else 0.0 for t in BLOCK_TYPES]
        macs = op[_COL["conv_macs"]] + op[_COL["dw_macs"]] + op[_COL["pw_macs"]] + op[_COL["linear_macs"]]
        total = max(macs, 1e-9)
        rows.append(onehot + [
            math.log2(spec.resolution), math.log2(spec.cin), math.log2(spec.cout),
            math.log2(mid_channels(spec)), float(spec.kernel), float(spec.stride), spec.expand,
            math.log(total), op[_COL["dw_macs"]] / total, op[_COL["pw_macs"]] / total,
            op[_COL["conv_macs"]] / total, math.log(op[_COL["io_elems"]]), math.log(op[_COL["nodes"]] + 1)])
    return np.array(rows, dtype=np.float64).reshape(len(specs), len(SHAPE_COLUMNS))


#: Columns of :func:`plain_features` (the baseline's inputs, no op knowledge).
PLAIN_COLUMNS: tuple[str, ...] = tuple(f"is_{t}" for t in BLOCK_TYPES) + (
    "resolution", "cin", "cout", "kernel", "stride", "expand")


def plain_features(specs: list[BlockSpec]) -> np.ndarray:
    """Plain block features (type one-hot, resolution, channels, kernel, stride, expand) for baselines."""
    rows = [[1.0 if s.type == t else 0.0 for t in BLOCK_TYPES]
            + [s.resolution, s.cin, s.cout, s.kernel, s.stride, s.expand] for s in specs]
    return np.array(rows, dtype=np.float64).reshape(len(specs), len(PLAIN_COLUMNS))
