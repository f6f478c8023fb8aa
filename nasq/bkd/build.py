"""Build the block-wise KD accuracy table on Ray, resumably (SpaceEvo §4.5).

The N × |types| (stage, block type) trainings (:func:`nasq.bkd.train.train_stage`) are independent, so
each runs as one Ray task (``num_cpus = cpus_per_task``). A task writes its rows to
``DIR/parts/s{stage}-{type}.csv`` and then its done marker ``…done.json`` (seconds, row count, estimator
error, the settings fingerprint), each through a temporary file and ``os.replace``, so a part exists
completely or not at all. A rerun of the same build (a killed driver, a failed task) skips every part
with a valid done marker and trains only the rest; the teacher is written once to ``DIR/teacher.pt`` and
reused, so resumed parts distil the same teacher.

When every part is done the table is merged into the LUT directory (the contract with
:mod:`nasq.bkd.table`):

- ``DIR/lut.csv``: columns ``stage, block_type, setting, nsr_fp32, nsr_int8, flops, params`` (setting =
  :func:`nasq.spaces.spaceevo_subnet.setting_key`; FLOPs as MACs);
- ``DIR/lut.json``: ``format`` ``nasq.accuracy-lut``, ``version`` 1 (both written by
  :func:`nasq.bkd.table.write_lut_text`), ``table_version`` (hash of lut.csv),
  ``hyperspace`` (its :func:`nasq.spaces.spaceevo.space_from_name` name) and ``resolution``, stages, types,
  max depth, teacher info, data, ``estimator`` (:data:`TABLE_ESTIMATOR`, the reader's estimator of
  settings without a row), the uniform-mean estimator's held-out error per part (``uniform_mean_error``),
  settings, ``seconds`` per (stage, type) and the total.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nasq.bkd.rows import COLUMNS, ESTIMATOR
from nasq.bkd.table import RIDGE_ESTIMATOR, atomic_write, rows_csv, write_lut_text
from nasq.errors import CheckpointError, ConfigError, NasqError
from nasq.settings import LutSettings

log = logging.getLogger(__name__)

PART_FORMAT = "nasq.lut.part"
#: estimator the reader uses for settings without a row: nasq.bkd.table's ridge regression, which ranked
#: the held-out mixed rows of the digits build better than the uniform mean (pooled Kendall τ 0.44 vs 0.34,
#: better in 16 of 21 parts); the uniform mean's held-out error is still recorded (``uniform_mean_error``)
TABLE_ESTIMATOR = RIDGE_ESTIMATOR
BUILD_FILE, TEACHER_FILE = "build.json", "teacher.pt"  # the LUT's own files: nasq.bkd.table.LUT_CSV/LUT_JSON


@dataclass(frozen=True)
class BuildReport:
    """What a build (or resumed build) did."""

    out: Path
    trained: tuple[str, ...]  # parts trained by this call ("1:mbv2")
    skipped: tuple[str, ...]  # parts already done
    seconds: dict  # part -> training seconds (all parts)


def part_name(stage: int, block_type: str) -> str:
    """The id of one (stage, type) part, e.g. ``1:mbv2``."""
    return f"{stage}:{block_type}"


def part_paths(out: Path, stage: int, block_type: str) -> tuple[Path, Path]:
    """(rows CSV, done marker) of one part."""
    base = out / "parts" / f"s{stage}-{block_type}"
    return base.with_suffix(".csv"), base.with_name(base.name + ".done.json")


BUILD_VERSION = 1  # bump when the training or evaluation code changes the table's numbers


def fingerprint(settings: LutSettings) -> str:
    """Hash of the settings (and the build code's version) that change the table's numbers (§4.5):
    a resumed build keeps only parts made with the same."""
    doc = {"build_version": BUILD_VERSION, **settings.result_fields()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def read_done(out: Path, stage: int, block_type: str, fp: str) -> dict | None:
    """The done marker of a finished part of this build, else None (missing, foreign or torn)."""
    rows, done = part_paths(out, stage, block_type)
    try:
        doc = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != PART_FORMAT or doc.get("fingerprint") != fp:
        return None
    return doc if rows.is_file() else None


def run_part(out: str, stage: int, block_type: str, config: dict, teacher_file: str) -> dict:
    """One (stage, type) training: load data and teacher, train, write rows then the done marker."""
    import torch

    from nasq.bkd.teacher import load_teacher
    from nasq.bkd.train import train_stage
    from nasq.spaces.spaceevo import space_from_name

    settings = LutSettings.from_dict(config)
    torch.set_num_threads(settings.threads)
    h = space_from_name(settings.hyperspace).hyperspace
    teacher, _ = load_teacher(teacher_file, h, settings.teacher_type)
    train_x, val_x = _images(settings, h.resolution)
    result = train_stage(h, stage, block_type, teacher, train_x, val_x, settings)
    rows_path, done_path = part_paths(Path(out), stage, block_type)
    atomic_write(rows_path, rows_csv(result.rows))
    doc = {"format": PART_FORMAT, "part": part_name(stage, block_type), "fingerprint": fingerprint(settings),
           "rows": len(result.rows), "seconds": round(result.seconds, 3), "estimator": result.estimator,
           "train_nsr": result.train_nsr, "qat_nsr": result.qat_nsr, "pid": os.getpid(),
           "finished": time.time()}
    atomic_write(done_path, json.dumps(doc, indent=1))
    return doc


def _images(settings: LutSettings, resolution: int):
    from nasq.bkd.teacher import prepare_images
    from nasq.data import load_dataset

    splits = load_dataset(settings.dataset, data_root=settings.data_root, seed=settings.data_seed,
                          limit=settings.data_limit)
    return (prepare_images(splits.train.tensors[0], resolution), prepare_images(splits.val.tensors[0],
                                                                                resolution))


def prepare_teacher(settings: LutSettings, out: Path) -> dict:
    """``DIR/teacher.pt``: reused when there, else loaded from the checkpoint or trained (§4.5 teacher)."""
    from nasq.bkd.teacher import load_teacher, prepare_images, save_teacher, train_teacher
    from nasq.data import load_dataset
    from nasq.spaces.spaceevo import space_from_name

    path = out / TEACHER_FILE
    h = space_from_name(settings.hyperspace).hyperspace
    if path.is_file():
        return load_teacher(path, h, settings.teacher_type)[1]
    if settings.teacher_checkpoint:
        teacher, info = load_teacher(settings.teacher_checkpoint, h, settings.teacher_type)
        info = {**info, "source": "checkpoint", "checkpoint": settings.teacher_checkpoint}
    else:
        splits = load_dataset(settings.dataset, data_root=settings.data_root, seed=settings.data_seed,
                              limit=settings.data_limit)
        prep = [(prepare_images(s.tensors[0], h.resolution), s.tensors[1]) for s in (splits.train, splits.val)]
        teacher, info = train_teacher(h, prep[0], prep[1], settings.teacher_type, settings.teacher_steps,
                                      settings.batch_size, seed=settings.seed)
    info = {**info, "block_type": teacher.block_type, "widths": list(teacher.widths)}
    save_teacher(teacher, path, settings.hyperspace, info)
    return info


def _check_out(settings: LutSettings, out: Path) -> str:
    """Create or reopen the build folder; a folder of another build is refused (one line)."""
    fp = fingerprint(settings)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    path = out / BUILD_FILE
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict) or doc.get("fingerprint") != fp:
            raise CheckpointError(f"{out} holds a LUT build with other settings; pass another --out or the "
                                  "same settings to resume it")
    else:
        atomic_write(path, json.dumps({"format": "nasq.lut.build", "fingerprint": fp,
                                       "settings": settings.to_config()}, indent=1))
    return fp


def build_lut(settings: LutSettings, out: str | Path) -> BuildReport:
    """Build (or resume) the accuracy table of ``settings`` into ``out`` on the running Ray (§4.5).

    Ray must be initialised (``nasq.runner.connect_ray`` or a test fixture). Raises ``NasqError`` naming
    the failed parts when some training failed; the finished parts stay and a rerun resumes.
    """
    import ray

    from nasq.spaces.spaceevo import space_from_name

    out = Path(out).expanduser().resolve()
    fp = _check_out(settings, out)
    h = space_from_name(settings.hyperspace).hyperspace
    types = settings.block_types or h.types
    teacher = prepare_teacher(settings, out)
    parts = [(i, t) for i in range(h.num_stages) for t in types]
    skipped = [part_name(i, t) for i, t in parts if read_done(out, i, t, fp)]
    todo = [(i, t) for i, t in parts if part_name(i, t) not in skipped]
    log.info("LUT build %s: %d parts to train, %d already done", out, len(todo), len(skipped))
    cpus = ray.cluster_resources().get("CPU", 0)
    if todo and settings.cpus_per_task > cpus:  # such tasks would wait for ever
        raise ConfigError(f"--cpus-per-task {settings.cpus_per_task:g} is more than the cluster's {cpus:g} CPUs; "
                          f"pass --cpus-per-task {max(1.0, cpus):g} or fewer")
    task = ray.remote(run_part).options(num_cpus=settings.cpus_per_task, max_retries=settings.retries)
    refs = {task.remote(str(out), i, t, settings.to_config(), str(out / TEACHER_FILE)): part_name(i, t)
            for i, t in todo}
    failed, pending = [], list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            doc = ray.get(ready[0])
            log.info("part %s done in %.1f s", doc["part"], doc["seconds"])
        except (ray.exceptions.RayError, OSError) as exc:
            failed.append(f"{refs[ready[0]]} ({type(exc).__name__})")
            log.warning("part %s failed: %s", refs[ready[0]], str(exc).splitlines()[-1:])
    if failed:
        raise NasqError(f"{len(failed)} of {len(parts)} (stage, type) trainings failed: {', '.join(failed)}; "
                        f"rerun the same command to resume (the {len(parts) - len(failed)} finished ones are "
                        "kept)")
    seconds = merge(settings, out, parts, teacher, fp)
    return BuildReport(out, tuple(part_name(i, t) for i, t in todo), tuple(skipped), seconds)


def merge(settings: LutSettings, out: Path, parts: list[tuple[int, str]], teacher: dict, fp: str) -> dict:
    """Write ``lut.csv`` and ``lut.json`` from the finished parts; return seconds per part."""
    from nasq.spaces.spaceevo import space_from_name

    h = space_from_name(settings.hyperspace).hyperspace
    text, seconds, estimator = rows_csv([]), {}, {}
    for i, t in parts:
        rows_path, _ = part_paths(out, i, t)
        done = read_done(out, i, t, fp)
        if done is None or not rows_path.is_file():
            raise CheckpointError(f"part {part_name(i, t)} of {out} has no finished rows; rerun the same "
                                  "command to train it")
        body = rows_path.read_text().split("\n", 1)[1]
        text += body if body.endswith("\n") or not body else body + "\n"
        seconds[part_name(i, t)] = done["seconds"]
        estimator[part_name(i, t)] = done["estimator"]
    meta = {"table_version": hashlib.sha256(text.encode()).hexdigest()[:16],
            "hyperspace": settings.hyperspace, "resolution": h.resolution, "stages": h.num_stages,
            "types": list(settings.block_types or h.types), "max_depth": max(h.depths),
            "teacher": teacher, "data": {"dataset": settings.dataset, "data_seed": settings.data_seed,
                                         "data_limit": settings.data_limit, "split": "val"},
            "columns": list(COLUMNS), "flops_unit": "MACs",
            "estimator": TABLE_ESTIMATOR, "uniform_mean_error": {"estimator": ESTIMATOR, "parts": estimator},
            "settings": settings.to_config(), "seconds": seconds,
            "seconds_total": round(sum(seconds.values()), 3)}
    write_lut_text(out, text, meta)  # lut.json gets the format and version fields first
    return seconds
