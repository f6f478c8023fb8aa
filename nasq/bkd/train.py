"""Training and evaluation of one (stage, block type) of the accuracy table (SpaceEvo §4.5, DONNA §3).

Plain PyTorch, no Ray (:mod:`nasq.bkd.build` runs one of these per Ray task). For stage i and type b:

1. the student is an elastic stage over the hyperspace's whole stage-i width list (any window of any
   candidate space is a slice of it), input widths = the whole stage-(i-1) list (the stem's width for
   stage 0), between 1×1 conv adapters from the teacher's map i and to the teacher's map i + 1;
2. fp32 phase: ``steps`` Adam steps of the **sandwich rule** (largest, smallest and two random settings
   per step, gradients summed) on the **NSR loss** to the teacher's map (:func:`nasq.bkd.nsr.nsr_loss`);
3. every table setting (:mod:`nasq.bkd.rows`: all uniform settings + held-out mixed ones) is evaluated
   in fp32 on the validation split, BatchNorm recalibrated per setting on ``bn_batches`` training batches
   (Once-for-All);
4. LSQ+ phase: quantizers on (:mod:`nasq.quant.lsq`), ``qat_steps`` sandwich steps, then every setting
   is evaluated again in fake INT8 (``nsr_int8``).

Row columns: ``stage, block_type, setting, nsr_fp32, nsr_int8, flops, params`` with FLOPs as
multiply-accumulates and parameters of the stage's blocks with BN folded (:mod:`nasq.blocks.cost`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasq.bkd.nsr import nsr_loss
from nasq.bkd.rows import COLUMNS, StageSetting, estimator_error, mixed_settings, random_setting, uniform_settings
from nasq.bkd.teacher import Teacher
from nasq.blocks.cost import block_ops
from nasq.quant.lsq import LsqActQuant, set_quant
from nasq.settings import LutSettings
from nasq.spaces.spaceevo import ElasticStage, Hyperspace
from nasq.supernet.dynamic_ops import DynamicBatchNorm2d
from nasq.supernet.elastic import ElasticStageModule, stage_specs

log = logging.getLogger(__name__)

Maps = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def lut_stage(h: Hyperspace, stage: int, block_type: str) -> ElasticStage:
    """The elastic stage the table trains for (stage, type): all widths of the stage, all input widths."""
    return ElasticStage(block_type, h.widths[stage], h.widths[stage - 1] if stage else (h.stem_width,),
                        h.stage_strides[stage], h.stage_resolutions()[stage], h.kernels, h.depths,
                        h.expands_of(block_type))


class StageStudent(nn.Module):
    """Adapter in (teacher width → the active input width) → elastic stage → INT8 output quantizer →
    adapter out (the active output width → teacher width)."""

    def __init__(self, stage: ElasticStage, teacher_in: int, teacher_out: int) -> None:
        super().__init__()
        self.adapter_in = nn.Conv2d(teacher_in, max(stage.in_widths), 1)
        self.stage = ElasticStageModule(stage)
        self.out_q = LsqActQuant()
        self.adapter_out = nn.Conv2d(max(stage.widths), teacher_out, 1)

    def forward(self, t_in: torch.Tensor, setting: StageSetting) -> torch.Tensor:
        self.stage.set_active(setting.blocks)
        y = self.out_q(self.stage(self.adapter_in(t_in)[:, :setting.cin]))
        return F.conv2d(y, self.adapter_out.weight[:, :y.shape[1]], self.adapter_out.bias)

    def largest(self) -> StageSetting:
        return StageSetting(max(self.stage.stage.in_widths), self.stage.largest())

    def smallest(self) -> StageSetting:
        return StageSetting(min(self.stage.stage.in_widths), self.stage.smallest())


@dataclass
class StageResult:
    """Rows of one (stage, type) and how they were made."""

    rows: list[dict]
    seconds: float
    estimator: dict  # held-out error of the uniform-mean estimator, fp32 and int8
    train_nsr: float  # mean sandwich NSR of the last fp32 steps
    qat_nsr: float  # mean sandwich NSR of the last LSQ+ steps


def teacher_maps(teacher: Teacher, stage: int) -> Maps:
    """``x -> (map i, map i + 1)`` of the teacher, without gradients."""
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            maps = teacher.features(x, upto=stage + 1)
        return maps[stage], maps[stage + 1]
    return fn


def sandwich_steps(student: StageStudent, maps: Maps, x: torch.Tensor, steps: int, lr: float,
                   batch_size: int, rng: np.random.Generator) -> float:
    """``steps`` Adam steps, each on the largest, the smallest and two random settings (sandwich rule).

    Returns:
        The mean NSR of the last quarter of the steps (sum over the four settings / 4).
    """
    if steps <= 0:
        return float("nan")
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    stage, losses = student.stage.stage, []
    student.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(len(x), size=min(batch_size, len(x))))
        t_in, t_out = maps(x[idx])
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for s in (student.largest(), student.smallest(), random_setting(stage, rng), random_setting(stage, rng)):
            loss = nsr_loss(student(t_in, s), t_out) / 4
            loss.backward()
            total += float(loss.detach())
        nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        opt.step()
        sched.step()
        losses.append(total)
    return float(np.mean(losses[-max(1, steps // 4):]))


@torch.no_grad()
def recalibrate_bn(student: StageStudent, setting: StageSetting, batches: list[torch.Tensor]) -> None:
    """Reset the stage's BatchNorm statistics and re-estimate them for ``setting`` (Once-for-All)."""
    bns = [m for m in student.stage.modules() if isinstance(m, DynamicBatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    student.train()
    for t_in in batches:
        student(t_in, setting)
    for m in bns:
        m.momentum = 0.1
    student.eval()


@torch.no_grad()
def evaluate_settings(student: StageStudent, settings: list[StageSetting], val: tuple[torch.Tensor, torch.Tensor],
                      calib: list[torch.Tensor], batch_size: int = 256) -> np.ndarray:
    """NSR of each setting on the validation maps (per-sample NSR averaged), BN recalibrated first."""
    t_in, t_out = val
    out = np.empty(len(settings))
    for r, s in enumerate(settings):
        if calib:
            recalibrate_bn(student, s, calib)
        student.eval()
        total = 0.0
        for i in range(0, len(t_in), batch_size):
            total += float(nsr_loss(student(t_in[i:i + batch_size], s), t_out[i:i + batch_size])) * len(
                t_in[i:i + batch_size])
        out[r] = total / len(t_in)
    return out


def setting_cost(stage: ElasticStage, setting: StageSetting) -> tuple[int, int]:
    """(MACs, parameters) of a setting's blocks (BN folded; :func:`nasq.blocks.cost.block_ops`)."""
    ops = [op for spec in stage_specs(stage, setting.cin, setting.blocks) for op in block_ops(spec)]
    return sum(op.macs for op in ops), sum(op.params for op in ops)


def train_stage(h: Hyperspace, stage: int, block_type: str, teacher: Teacher,
                train_x: torch.Tensor, val_x: torch.Tensor, settings: LutSettings) -> StageResult:
    """Train and evaluate the elastic stage of (``stage``, ``block_type``) (module docstring, §4.5).

    Args:
        h: the hyperspace.
        stage: stage index i (the student maps teacher map i to map i + 1).
        block_type: one of the hyperspace's types.
        teacher: the trained teacher (eval mode).
        train_x, val_x: prepared images (:func:`nasq.bkd.teacher.prepare_images`) of the two splits.
        settings: steps, learning rates, evaluation sizes and the seed.
    """
    start = time.perf_counter()
    type_index = h.types.index(block_type)
    rng = np.random.default_rng([settings.seed, stage, type_index])
    torch.manual_seed(int(rng.integers(2**31)))
    st = lut_stage(h, stage, block_type)
    student = StageStudent(st, teacher.widths[stage], teacher.widths[stage + 1])
    maps = teacher_maps(teacher, stage)
    uniform = uniform_settings(st)
    mixed = mixed_settings(st, settings.mixed_rows, rng)
    table = uniform + mixed
    val_idx = torch.from_numpy(np.sort(rng.permutation(len(val_x))[:settings.eval_examples]))
    val = maps(val_x[val_idx])
    calib = [maps(train_x[torch.from_numpy(rng.integers(len(train_x), size=min(settings.batch_size,
                                                                                len(train_x))))])[0]
             for _ in range(settings.bn_batches)]

    train_nsr = sandwich_steps(student, maps, train_x, settings.steps, settings.lr, settings.batch_size, rng)
    fp32 = evaluate_settings(student, table, val, calib)
    set_quant(student, True)
    with torch.no_grad():  # LSQ+ initialisation from the largest setting's first batch
        student.train()
        student(calib[0] if calib else val[0][: settings.batch_size], student.largest())
    qat_nsr = sandwich_steps(student, maps, train_x, settings.qat_steps, settings.qat_lr, settings.batch_size,
                             rng)
    int8 = evaluate_settings(student, table, val, calib)
    set_quant(student, False)

    dmax = max(h.depths)
    rows = []
    for s, a, b in zip(table, fp32, int8):
        flops, params = setting_cost(st, s)
        rows.append({"stage": stage, "block_type": block_type, "setting": s.key(dmax), "nsr_fp32": float(a),
                     "nsr_int8": float(b), "flops": flops, "params": params})
    n = len(uniform)
    est = {}
    for col, values in (("fp32", fp32), ("int8", int8)):
        known = {s.key(dmax): float(v) for s, v in zip(uniform, values[:n])}
        held = {s.key(dmax): float(v) for s, v in zip(mixed, values[n:])}
        est[col] = estimator_error(known, held, dmax)
    seconds = time.perf_counter() - start
    log.info("stage %d %s: %d rows in %.1f s (train NSR %.3f, QAT NSR %.3f)", stage, block_type, len(rows),
             seconds, train_nsr, qat_nsr)
    return StageResult(rows, seconds, est, train_nsr, qat_nsr)
