"""Teacher of block-wise distillation: one feature map per stage boundary (SpaceEvo §4.5, DNA/DONNA).

The default teacher is the hyperspace's *widest homogeneous chain*: the stem, then per stage the deepest
run of the widest blocks of one type (largest kernel and expand), then the head, built from
:mod:`nasq.blocks` BlockSpecs, so its maps have exactly the hyperspace's stage resolutions and the widths
``max(widths[i])``. Map 0 is the stem's output, map i + 1 stage i's output; the student of stage i maps
teacher map i to teacher map i + 1. It is trained here with the ``nasq train`` loop
(:func:`nasq.models.training.train_steps`) or loaded from a checkpoint (``torch.load(weights_only=True)``).

Inputs are brought to the hyperspace: grey images are repeated to the stem's 3 channels and images are
resized (bilinear) to the hyperspace's resolution (:func:`prepare_images`).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nasq.blocks.spec import BlockSpec
from nasq.blocks.torch_blocks import create_block
from nasq.errors import CheckpointError, ConfigError, bad_token
from nasq.spaces.spaceevo import SPACEEVO_TYPES, Hyperspace

log = logging.getLogger(__name__)

TEACHER_FORMAT, TEACHER_VERSION = "nasq.bkd.teacher", 1


def teacher_specs(h: Hyperspace, block_type: str = "mbv2") -> list[list[BlockSpec]]:
    """BlockSpecs of the widest homogeneous chain: ``[[stem], stage 0 blocks, ..., [head]]``."""
    if block_type not in SPACEEVO_TYPES:
        raise ConfigError(bad_token("teacher block type", block_type, list(SPACEEVO_TYPES)))
    k, e = max(h.kernels), max(h.expands_of(block_type))
    groups, cin, res = [[h.stem()]], h.stem_width, h.stage_resolutions()
    for i, widths in enumerate(h.widths):
        r, blocks = res[i], []
        for j in range(max(h.depths)):
            blocks.append(BlockSpec(block_type, r, cin, max(widths), k, h.stage_strides[i] if j == 0 else 1, e))
            cin, r = max(widths), blocks[-1].out_resolution
        groups.append(blocks)
    groups.append([h.head(cin)])
    return groups


class Teacher(nn.Module):
    """The widest homogeneous chain with its stage-boundary feature maps (SpaceEvo §4.5)."""

    def __init__(self, hyperspace: Hyperspace, block_type: str = "mbv2") -> None:
        super().__init__()
        self.hyperspace, self.block_type = hyperspace, block_type
        groups = teacher_specs(hyperspace, block_type)
        self.stem = create_block(groups[0][0])
        self.stages = nn.ModuleList(nn.Sequential(*(create_block(s) for s in g)) for g in groups[1:-1])
        self.head = create_block(groups[-1][0])

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each map: the stem's, then each stage's."""
        return (self.hyperspace.stem_width,) + tuple(max(w) for w in self.hyperspace.widths)

    def features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Maps 0..``upto`` (all when None): the stem output, then each stage's output."""
        upto = len(self.stages) if upto is None else upto
        maps = [self.stem(x)]
        for stage in self.stages[:upto]:
            maps.append(stage(maps[-1]))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


def prepare_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images (N, C, H, W) as the stem wants them: 3 channels (grey repeated), ``resolution`` px square."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ConfigError(f"images have {x.shape[1]} channels; the SpaceEvo stem takes 1 (grey) or 3")
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.contiguous()


def save_teacher(teacher: Teacher, path: Path, hyperspace_name: str, info: dict) -> None:
    """Write the teacher's checkpoint (state dict + header) atomically."""
    doc = {"format": TEACHER_FORMAT, "version": TEACHER_VERSION, "hyperspace": hyperspace_name,
           "block_type": teacher.block_type, "info": info, "state_dict": teacher.state_dict()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(doc, tmp)
    os.replace(tmp, path)


def load_teacher(path: str | Path, hyperspace: Hyperspace, block_type: str = "mbv2") -> tuple[Teacher, dict]:
    """Load a teacher checkpoint (``weights_only=True``): a :func:`save_teacher` file or a plain state dict
    of :class:`Teacher`.

    Returns:
        The teacher (eval mode) and the checkpoint's info (empty for a plain state dict).

    Raises:
        CheckpointError: unreadable, or its weights do not fit the hyperspace's teacher (one line).
    """
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot read teacher checkpoint {path} ({type(exc).__name__}); pass a file "
                              "written by `nasq lut build` (teacher.pt) or a Teacher state_dict") from None
    info: dict = {}
    if isinstance(doc, dict) and doc.get("format") == TEACHER_FORMAT:
        version = doc.get("version")
        if isinstance(version, bool) or version != TEACHER_VERSION:
            raise CheckpointError(f"teacher checkpoint {path} has format version {version!r}, this nasq reads "
                                  f"{TEACHER_VERSION}; rebuild it with `nasq lut build` or pass a state_dict")
        block_type, info, state = doc.get("block_type", block_type), dict(doc.get("info") or {}), doc.get(
            "state_dict")
    else:
        state = doc
    if not isinstance(state, dict):
        raise CheckpointError(f"teacher checkpoint {path} holds no state dict; save Teacher.state_dict()")
    teacher = Teacher(hyperspace, block_type)
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"teacher checkpoint {path} does not fit the {block_type} teacher of this "
                              f"hyperspace ({first[:160]}); build it with the same --hyperspace") from None
    return teacher.eval(), info


def train_teacher(hyperspace: Hyperspace, train: tuple[torch.Tensor, torch.Tensor],
                  val: tuple[torch.Tensor, torch.Tensor], block_type: str = "mbv2", steps: int = 300,
                  batch_size: int = 64, lr: float = 0.05, seed: int = 0) -> tuple[Teacher, dict]:
    """Train the widest homogeneous chain on prepared images with the ``nasq train`` loop (§4.5 teacher).

    Returns:
        The teacher (eval mode) and its info: block type, steps, validation accuracy in percent.
    """
    from torch.utils.data import TensorDataset

    from nasq.models.training import TrainSettings, evaluate, train_steps

    torch.manual_seed(seed)
    teacher = Teacher(hyperspace, block_type)
    loss = train_steps(teacher, TensorDataset(*train), TrainSettings(steps=steps, batch_size=batch_size, lr=lr,
                                                                    seed=seed))
    acc = evaluate(teacher, TensorDataset(*val))
    log.info("teacher %s: %d steps, train loss %.3f, val acc %.1f%%", block_type, steps, loss, acc)
    return teacher.eval(), {"source": "trained", "block_type": block_type, "steps": steps,
                            "train_loss": loss, "val_acc": acc}
