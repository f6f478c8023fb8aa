"""The JASQ CIFAR skeleton (Chen et al. 2018, Fig. 2) as a weight-sharing supernet.

Skeleton: stem 3x3 conv + BN (F channels), N normal cells, a reduction cell, N normal,
a reduction, N normal, global average pooling and a linear classifier. Reduction cells
double the channels. Every cell concatenates the outputs of *all* B combinations (the
JASQ §3.2 rule, not NASNet's "unused only"), so a cell always outputs B·C channels and
every tensor keeps one shape whatever the genome: that is what lets the population share
weights (JASQ Appendix 4).

Weight sharing: :class:`SharedNasNet` holds one module per (cell position, combination,
input slot, op) with parameters: ``sep3x3``/``sep5x5`` and, in reduction cells, the
factorized reduce that ``identity`` becomes on a stride-2 input. Pools, ``zero`` and
stride-1 ``identity`` have no weights. Module names are genome-independent, e.g.
``cells.3.ops.b1s0_sep5x5.pw1.weight``, so a one-genome network built with
``genome=...`` has a subset of the supernet's names and can load pulled shared tensors.

Batch norm: in the shared network BN keeps no running statistics (batch statistics at
evaluation, as one-shot NAS supernets do: running statistics of one shared BN would mix
every genome); a stand-alone network (``track_bn_stats=True``) is an ordinary one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nasq.spaces.jasq import Cell, JasqGenome, is_reduction

WEIGHTED_OPS: tuple[str, ...] = ("sep3x3", "sep5x5")


@dataclass(frozen=True)
class NetConfig:
    """Shape of the skeleton (JASQ Fig. 2)."""

    num_classes: int  # classifier outputs
    input_shape: tuple[int, int, int]  # (C, H, W), 8x8 to 32x32
    channels: int = 16  # F, channels of the first stage
    cells: int = 1  # N, normal cells per stage (3N+2 cells in all)
    combinations: int = 5  # B, combinations per cell


@dataclass(frozen=True)
class BitRule:
    """Bits of the parameters outside cells and of BN (JASQ §3.4; 32 = kept as float)."""

    stem: int = 16  # stem conv
    classifier: int = 16  # final linear layer
    batchnorm: int = 16  # every BN weight and bias, in cells too


class SepConv(nn.Module):
    """(ReLU, depthwise kxk, pointwise 1x1, BN) x2; the stride goes to the first depthwise conv."""

    def __init__(self, channels: int, kernel: int, track: bool) -> None:
        super().__init__()
        c, k = channels, kernel
        self.dw1 = nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
        self.pw1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c, track_running_stats=track)
        self.dw2 = nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
        self.pw2 = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c, track_running_stats=track)

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        k = self.dw1.kernel_size[0]
        x = F.conv2d(F.relu(x), self.dw1.weight, stride=stride, padding=k // 2, groups=self.dw1.groups)
        x = self.bn1(self.pw1(x))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class ReLUConvBN(nn.Module):
    """ReLU, 1x1 conv, BN: the cell-input preprocessing."""

    def __init__(self, cin: int, cout: int, track: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, track_running_stats=track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs concatenated (NASNet)."""

    def __init__(self, cin: int, cout: int, track: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout, track_running_stats=track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], dim=1))


def op_key(combination: int, slot: int, op: str) -> str:
    """Name of the shared module of one (combination, input slot, op) inside a cell."""
    return f"b{combination}s{slot}_{op}"


def cell_keys(cell: Cell, reduction: bool) -> tuple[set[str], set[int]]:
    """Weighted op modules a cell genome uses, and which cell inputs (0, 1) it reads."""
    keys: set[str] = set()
    inputs: set[int] = set()
    for b, combo in enumerate(cell.combinations):
        for slot, (inp, op) in enumerate(((combo.input1, combo.op1), (combo.input2, combo.op2))):
            if op == "zero":
                continue
            if inp < 2:
                inputs.add(inp)
            if op in WEIGHTED_OPS:
                keys.add(op_key(b, slot, op))
            elif op == "identity" and reduction and inp < 2:
                keys.add(op_key(b, slot, "reduce"))
    return keys, inputs


class CellModule(nn.Module):
    """One skeleton position: preprocessing of its two inputs and its shared op modules."""

    def __init__(self, cpp: int, cp: int, c: int, reduction: bool, reduction_prev: bool, combinations: int,
                 track: bool, only: tuple[set[str], set[int]] | None = None) -> None:
        super().__init__()
        self.reduction, self.channels = reduction, c
        keys, inputs = only if only is not None else (None, {0, 1})
        if 0 in inputs:
            self.pre0 = FactorizedReduce(cpp, c, track) if reduction_prev else ReLUConvBN(cpp, c, track)
        if 1 in inputs:
            self.pre1 = ReLUConvBN(cp, c, track)
        self.ops = nn.ModuleDict()
        for b in range(combinations):
            for slot in (0, 1):
                for op in WEIGHTED_OPS:
                    self._add(keys, op_key(b, slot, op), lambda op=op: SepConv(c, int(op[3]), track))
                if reduction:
                    self._add(keys, op_key(b, slot, "reduce"), lambda: FactorizedReduce(c, c, track))

    def _add(self, keys: set[str] | None, key: str, make) -> None:
        if keys is None or key in keys:
            self.ops[key] = make()

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, cell: Cell) -> torch.Tensor:
        _, inputs = cell_keys(cell, self.reduction)
        pre = {0: (lambda: self.pre0(s0)), 1: (lambda: self.pre1(s1))}
        states: list[torch.Tensor | None] = [pre[i]() if i in inputs else None for i in (0, 1)]
        h, w = s1.shape[-2:]
        out_hw = ((h + 1) // 2, (w + 1) // 2) if self.reduction else (h, w)
        for b, combo in enumerate(cell.combinations):
            a = self._apply(b, 0, combo.op1, states[combo.input1], combo.input1, s1, out_hw)
            c = self._apply(b, 1, combo.op2, states[combo.input2], combo.input2, s1, out_hw)
            states.append(a + c)
        return torch.cat(states[2:], dim=1)

    def _apply(self, b: int, slot: int, op: str, x, inp: int, ref: torch.Tensor, out_hw) -> torch.Tensor:
        if op == "zero":
            return ref.new_zeros(ref.shape[0], self.channels, *out_hw)
        stride = 2 if self.reduction and inp < 2 else 1
        if op in WEIGHTED_OPS:
            return self.ops[op_key(b, slot, op)](x, stride)
        if op == "avg3x3":
            return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
        if op == "max3x3":
            return F.max_pool2d(x, 3, stride, 1)
        return x if stride == 1 else self.ops[op_key(b, slot, "reduce")](x)


class SharedNasNet(nn.Module):
    """The Fig. 2 skeleton holding every shared op module, or only those of one genome.

    Args:
        config: skeleton shape.
        genome: if given, build only the modules this genome uses (a stand-alone network
            with the supernet's parameter names) and use it by default in ``forward``.
        track_bn_stats: keep BN running statistics (stand-alone training); False in the supernet.
    """

    def __init__(self, config: NetConfig, genome: JasqGenome | None = None,
                 track_bn_stats: bool = False) -> None:
        super().__init__()
        self.config, self.genome = config, genome
        cin, n = config.input_shape[0], config.cells
        c = config.channels
        self.stem = nn.Sequential(nn.Conv2d(cin, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c, track_running_stats=track_bn_stats))
        cpp, cp, red_prev = c, c, False
        self.cells = nn.ModuleList()
        for p in range(3 * n + 2):
            red = is_reduction(p, n)
            c = c * 2 if red else c
            only = cell_keys(genome.cell_at(p, n), red) if genome is not None else None
            self.cells.append(CellModule(cpp, cp, c, red, red_prev, config.combinations, track_bn_stats,
                                         only))
            cpp, cp, red_prev = cp, config.combinations * c, red
        self.classifier = nn.Linear(cp, config.num_classes)

    def set_active(self, genome: JasqGenome) -> None:
        """Make ``genome`` the default of :meth:`forward`."""
        self.genome = genome

    def forward(self, x: torch.Tensor, genome: JasqGenome | None = None) -> torch.Tensor:
        genome = genome if genome is not None else self.genome
        if genome is None:
            raise ValueError("SharedNasNet.forward needs a genome: pass one or call set_active(genome)")
        s0 = s1 = self.stem(x)
        for p, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, genome.cell_at(p, self.config.cells))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))

    def extract_subnet(self, genome: JasqGenome) -> "SharedNasNet":
        """A network of only ``genome``'s modules, holding copies of this supernet's tensors."""
        sub = SharedNasNet(self.config, genome, track_bn_stats=False)
        own = self.state_dict()
        sub.load_state_dict({k: own[k].clone() for k in sub.state_dict()})
        return sub


def build_network(genome: JasqGenome, config: NetConfig, shared: bool = False) -> SharedNasNet:
    """A network for one genome with fresh weights (JASQ §4: final training from scratch).

    ``shared=True`` gives the weight-shared variant (no BN running statistics), whose
    ``state_dict`` keys are exactly :func:`parameter_keys`.
    """
    return SharedNasNet(config, genome, track_bn_stats=not shared)


def with_running_stats(net: SharedNasNet) -> SharedNasNet:
    """A copy of a weight-shared network whose BN keeps running statistics (issue 11).

    The copy has the same parameters and fresh (zero mean, unit variance) statistics, to be
    recalibrated for its genome by :func:`nasq.models.training.recalibrate_bn` before
    evaluation, as single-path supernets do (Guo et al. 2020, SPOS §3.3).
    """
    if net.genome is None:
        raise ValueError("with_running_stats needs a one-genome network: build it with genome=...")
    out = SharedNasNet(net.config, net.genome, track_bn_stats=True)
    missing, unexpected = out.load_state_dict(net.state_dict(), strict=False)
    assert not unexpected and all(k.rsplit(".", 1)[-1] in _BN_BUFFERS for k in missing), (missing, unexpected)
    return out


_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _meta_network(genome: JasqGenome, config: NetConfig) -> SharedNasNet:
    with torch.device("meta"):
        return SharedNasNet(config, genome, track_bn_stats=False)


def parameter_keys(genome: JasqGenome, config: NetConfig) -> list[str]:
    """Names of the shared tensors a genome uses (JASQ Appendix 4)."""
    return [name for name, _ in _meta_network(genome, config).named_parameters()]


def bits_for_parameters(genome: JasqGenome, config: NetConfig, rule: BitRule = BitRule()) -> dict[str, int]:
    """Bit width of each parameter a genome uses (JASQ §3.4).

    Weights inside cell ``p`` take the genome's ``bits[p]``; the stem, the classifier and
    every BN parameter follow ``rule`` (default 16-bit; 32 keeps them as float).
    """
    net = _meta_network(genome, config)
    out: dict[str, int] = {}
    for mod_name, module in net.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            name = f"{mod_name}.{pname}" if mod_name else pname
            if isinstance(module, nn.BatchNorm2d):
                out[name] = rule.batchnorm
            elif name.startswith("stem."):
                out[name] = rule.stem
            elif name.startswith("classifier."):
                out[name] = rule.classifier
            else:
                out[name] = genome.bits[int(name.split(".")[1])]
    return out
