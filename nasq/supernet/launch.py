"""Data-parallel, resumable supernet training on Ray Train (SpaceEvo §5; BigNAS §3.1, Once-for-All).

A thin adapter over the plain-PyTorch loop of :mod:`nasq.supernet.train`: :func:`train_supernet` starts
a ``TorchTrainer`` whose workers each run :func:`train_loop` on their shard of the training split. The
model is wrapped in DDP (``find_unused_parameters``: a subnet leaves the rest of the supernet unused);
every worker trains the same subnets per step because :func:`~nasq.supernet.train.train_epoch` draws
them from ``(seed, global step)``.

Phase 1: ``epochs`` fp32 epochs, SGD (momentum 0.9) with a per-step cosine schedule from ``lr`` to 0.
Phase 2 ("quantized-for-all"): ``qat_epochs`` epochs with every LSQ+ quantizer on, initialised from the
same first training batch on every worker (then broadcast from rank 0), and a fresh SGD over weights and
quantizer scales with its own cosine schedule from ``qat_lr``.

After each epoch every rank evaluates the largest and smallest subnets on the whole validation split
(BN recalibrated on ``bn_batches`` training batches) and calls ``ray.train.report``; rank 0 attaches a
checkpoint (``supernet.pt``, tensors and plain types only, read with ``weights_only=True``). Re-running
with the same ``(storage, name)`` resumes from the latest checkpoint at the next epoch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from nasq.data import resolve_spec
from nasq.errors import CheckpointError, ConfigError
from nasq.quant.lsq import LsqActQuant, LsqWeightQuant, set_quant
from nasq.settings import SupernetSettings
from nasq.supernet.model import Supernet
from nasq.supernet.train import SupernetTrainSettings, enable_qat, evaluate, train_epoch

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "supernet.pt"
PHASES = ("fp32", "qat")


SupernetRunSettings = SupernetSettings  # the settings of one run (defined with the others in nasq.settings)


def train_settings(s: SupernetSettings) -> SupernetTrainSettings:
    """The per-epoch knobs of :func:`~nasq.supernet.train.train_epoch` (§5 sandwich rule)."""
    return SupernetTrainSettings(n_random=s.n_random, kd_temperature=s.kd_temperature, seed=s.seed)


# -- data ------------------------------------------------------------------------------------------
def load_images(settings: SupernetSettings, resolution: int) -> tuple[tuple[torch.Tensor, ...], ...]:
    """Train, validation and test ``(x, y)`` as the stem wants them (3 channels, ``resolution`` px; §5)."""
    from nasq.bkd.teacher import prepare_images
    from nasq.data import load_dataset

    splits = load_dataset(settings.dataset, data_root=settings.data_root, seed=settings.data_seed,
                          limit=settings.data_limit)
    return tuple((prepare_images(s.tensors[0], resolution), s.tensors[1]) for s in (splits.train, splits.val, splits.test))


def shard_batches(n: int, rank: int, world: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of worker ``rank``: a ``(seed, epoch)`` shuffle cut into ``world`` equal shards.

    Every worker gets the same number of full batches (DDP needs equal step counts).

    Raises:
        ConfigError: fewer training examples than workers.
    """
    per = n // world
    if per < 1:
        raise ConfigError(f"{n} training examples cannot be split over {world} workers; use fewer workers")
    idx = np.random.default_rng([seed, epoch]).permutation(n)[rank * per:(rank + 1) * per]
    steps = max(1, per // batch_size)
    return [idx[b * batch_size:(b + 1) * batch_size] for b in range(steps)]


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` cut into consecutive batches of ``size`` (the last may be shorter; evaluation, §5)."""
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


# -- optimisation ------------------------------------------------------------------------------------
def make_optimizer(net: torch.nn.Module, lr: float, total_steps: int):
    """SGD (momentum 0.9) over every parameter, LambdaLR cosine from ``lr`` to 0 over ``total_steps``.

    The schedule is a closed form of the step, so a resumed run with more epochs follows the new length.
    """
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    total = max(1, int(total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total)))
    return opt, sched


@torch.no_grad()
def init_quantizers(net: Supernet, x: torch.Tensor, seed: int, draws: int = 16) -> int:
    """Start the LSQ+ phase (SpaceEvo §5) on every worker alike: :func:`enable_qat` through the largest,
    then the same batch through the smallest and ``draws`` random subnets (``(seed, -1)`` draws), so no
    quantizer initialises itself later from a worker's own batch. Returns how many stay uninitialised
    (those no drawn subnet uses, e.g. residual-add quantizers of stride-2 first blocks)."""
    enable_qat(net, x)
    rng = np.random.default_rng([seed, 2**32 - 1])
    previous, was_training = net.active, net.training
    net.train()
    for sub in [net.smallest(), *net.sample(rng, draws)]:
        net.set_active(sub)
        net(x.to(next(net.parameters()).device))
    net.set_active(previous)
    net.train(was_training)
    quantizers = [m for m in net.modules() if isinstance(m, (LsqActQuant, LsqWeightQuant))]
    return sum(1 for m in quantizers if not int(m.initialized))


def _sync_from_rank0(net: torch.nn.Module) -> None:
    """Broadcast every parameter and buffer from rank 0 (after the LSQ+ init), when distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for t in list(net.parameters()) + list(net.buffers()):
            torch.distributed.broadcast(t.data, src=0)


def state_digest(net: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of every tensor of ``net.state_dict()``: equal iff bitwise equal."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# -- checkpoints -------------------------------------------------------------------------------------
def checkpoint_state(net: torch.nn.Module, opt, sched, phase: str, epoch: int, step: int) -> dict:
    """The checkpoint document: tensors and plain types only (``torch.load(weights_only=True)`` reads it)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "phase": phase,
            "epoch": int(epoch), "step": int(step), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached": float(cached)}}


def load_checkpoint_state(path: str) -> dict:
    """Read ``supernet.pt`` of a checkpoint folder (``weights_only=True``).

    Raises:
        CheckpointError: no such file, or not a supernet checkpoint.
    """
    file = os.path.join(path, CHECKPOINT_FILE)
    if not os.path.isfile(file):
        raise CheckpointError(f"{file} not found; pass a checkpoint folder written by train_supernet")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("phase") not in PHASES or "model" not in state:
        raise CheckpointError(f"{file} is not a supernet checkpoint; pass one written by train_supernet")
    return state


def _restore_rng(state: dict) -> None:
    r = state["numpy_rng"]
    keys = r["keys"].numpy().astype(np.uint32)
    np.random.set_state((r["kind"], keys, r["pos"], r["has_gauss"], r["cached"]))
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


# -- the worker loop ---------------------------------------------------------------------------------
def _epoch_metrics(net, s: SupernetSettings, calib, val, phase: str, epoch: int, step: int,
                   losses: dict[str, float]) -> dict:
    """Largest / smallest accuracy on the validation split (BN recalibrated; §5) and the epoch's losses."""
    acc = {f"acc_{k}": evaluate(net, sub, val, calib, s.bn_batches)
           for k, sub in (("largest", net.largest()), ("smallest", net.smallest()))}
    return {"epoch": epoch, "phase": phase, "int8": phase == "qat", "global_step": step, **acc,
            **{f"loss_{k}": v for k, v in losses.items()}}


def _gather_digests(net: torch.nn.Module, device: torch.device) -> list[str]:
    """Every rank's :func:`state_digest`, in rank order (one all-gather; just this rank's when alone)."""
    mine = state_digest(net)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [mine]
    t = torch.tensor([int(mine[i:i + 8], 16) for i in (0, 8)], dtype=torch.int64, device=device)
    out = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(out, t)
    return ["".join(f"{int(v):08x}" for v in o.cpu()) for o in out]


def _report(metrics: dict, state: dict | None) -> None:
    """``ray.train.report`` on every rank; rank 0 (``state`` given) attaches the checkpoint."""
    from ray.train import Checkpoint, report

    if state is None:
        report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, os.path.join(d, CHECKPOINT_FILE))
        report(metrics, checkpoint=Checkpoint.from_directory(d))


def _resume(net, s: SupernetSettings) -> tuple[dict | None, int, int, str]:
    """Load the run's latest checkpoint into ``net``: (state, first epoch to run, global step, phase)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None, 0, 0, "fp32"
    with ckpt.as_directory() as d:
        state = load_checkpoint_state(d)
    start = state["epoch"] + 1
    if state["phase"] == "qat" and start < s.epochs:
        raise ConfigError(f"the checkpoint is past the fp32 phase (epoch {state['epoch']}); "
                          f"use epochs <= {start} to resume it")
    set_quant(net, state["phase"] == "qat")
    net.load_state_dict(state["model"])
    _restore_rng(state)
    log.info("resuming at epoch %d, step %d (%s)", start, state["step"], state["phase"])
    return state, start, state["step"], state["phase"]


def _mean_across_workers(losses: dict[str, float], device: torch.device) -> dict[str, float]:
    """Every loss averaged over the workers (one all-reduce; unchanged when alone)."""
    if not losses or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return losses
    t = torch.tensor([losses[k] for k in sorted(losses)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    t /= torch.distributed.get_world_size()
    return dict(zip(sorted(losses), t.cpu().tolist()))


def train_loop(config: dict) -> None:
    """Ray Train worker loop: sandwich-rule fp32 epochs then LSQ+ epochs, report + checkpoint each (§5)."""
    import ray.train
    import ray.train.torch as rtt

    s: SupernetSettings = config["settings"]
    ctx = ray.train.get_context()
    rank, world, device = ctx.get_world_rank(), ctx.get_world_size(), rtt.get_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(s.seed)  # equal initial weights everywhere (DDP broadcasts rank 0's anyway)
    net = Supernet.from_string(s.space, s.hyperspace)
    (xtr, ytr), (xva, yva), _ = load_images(s, net.space.hyperspace.resolution)
    calib, val = batches(xtr, ytr, s.batch_size)[:s.bn_batches], batches(xva, yva, s.batch_size)
    state, start, step, phase = _resume(net, s)
    history = list(state.get("history", [])) if state is not None else []
    model = rtt.prepare_model(net, parallel_strategy_kwargs={"find_unused_parameters": True})
    start_digest = state_digest(net)  # the weights this call starts from (the checkpoint's on resume)
    spe = len(shard_batches(len(ytr), rank, world, s.batch_size, s.seed, 0))
    opt, sched = make_optimizer(net, s.lr if phase == "fp32" else s.qat_lr,
                                spe * (s.epochs if phase == "fp32" else s.qat_epochs))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    for epoch in range(start, s.epochs + s.qat_epochs):
        if epoch >= s.epochs and phase == "fp32":  # phase 2: the same first batch on every worker
            left = init_quantizers(net, xtr[:s.batch_size].to(device), s.seed)
            _sync_from_rank0(net)
            log.info("LSQ+ phase from epoch %d; %d quantizers unused by the drawn subnets", epoch, left)
            phase = "qat"
            opt, sched = make_optimizer(net, s.qat_lr, spe * s.qat_epochs)
        loader = [(xtr[i].to(device), ytr[i].to(device))
                  for i in shard_batches(len(ytr), rank, world, s.batch_size, s.seed, epoch)]
        t0 = time.perf_counter()
        losses = _mean_across_workers(train_epoch(model, loader, opt, train_settings(s), step, sched), device)
        seconds = time.perf_counter() - t0
        step += len(loader)
        metrics = _epoch_metrics(net, s, calib, val, phase, epoch, step, losses)
        metrics.update(train_seconds=seconds, samples_per_s=len(loader) * s.batch_size * world / seconds)
        history.append(dict(metrics))
        metrics.update(start_epoch=start, start_digest=start_digest,
                       weight_digests=_gather_digests(net, device))
        doc = checkpoint_state(net, opt, sched, phase, epoch, step) if rank == 0 else None
        if doc is not None:
            doc["history"] = history
        _report(metrics, doc)


# -- the driver --------------------------------------------------------------------------------------
def use_gpu(settings: SupernetSettings) -> bool:
    """Whether the workers take a GPU (§5 on CUDA): ``cuda``, or ``auto`` on a cluster with one per worker.

    Raises:
        ConfigError: ``cuda`` on a cluster without enough GPUs, or fewer CPUs than workers.
    """
    import ray

    have = ray.cluster_resources() if ray.is_initialized() else {}
    gpus, cpus = have.get("GPU", 0), have.get("CPU", 0)
    gpu = settings.device == "cuda" or (settings.device == "auto" and gpus >= settings.workers)
    if ray.is_initialized() and gpu and gpus < settings.workers:
        raise ConfigError(f"--device cuda needs {settings.workers} GPUs (one per worker); the Ray cluster has "
                          f"{gpus:g}; use fewer --workers or --device cpu")
    if ray.is_initialized() and not gpu and cpus < settings.workers:
        raise ConfigError(f"--workers {settings.workers} needs {settings.workers} CPUs; the Ray cluster has "
                          f"{cpus:g}; use --workers {max(1, int(cpus))} or join a larger cluster (--address)")
    return gpu


def train_supernet(settings: SupernetSettings, storage: str, name: str) -> dict:
    """Train the supernet on Ray Train (SpaceEvo §5), resuming ``storage/name`` when it has a checkpoint.

    Starts a local Ray when none is initialised (:func:`nasq.runner.connect_ray` first to choose). The
    settings go into ``storage/name/nasq-supernet.json`` before training starts (:mod:`nasq.supernet.run`).

    Args:
        settings: the run.
        storage: folder of Ray Train runs (made absolute).
        name: the run's name; the same ``(storage, name)`` continues the run at its next epoch.

    Returns:
        ``metrics`` (the last epoch's), ``checkpoint`` (its folder), ``path`` (the run folder),
        ``epochs_run`` (epochs this call trained), ``history`` (every epoch's metrics, resumed ones too).

    Raises:
        ConfigError: a bad run name or settings object, or settings that differ from the run's.
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from nasq.runner import connect_ray
    from nasq.supernet.run import write_run_file

    if not isinstance(settings, SupernetSettings):
        raise ConfigError(f"settings must be a SupernetSettings, got {type(settings).__name__}")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"run name must be a plain folder name, got {name!r}")
    spec, root = resolve_spec(settings.dataset, settings.data_root)
    settings = replace(settings, dataset=spec, data_root=root)
    storage = os.path.abspath(os.path.expanduser(storage))
    write_run_file(os.path.join(storage, name), settings)
    connect_ray(None)
    gpu = use_gpu(settings)
    trainer = TorchTrainer(
        train_loop, train_loop_config={"settings": settings},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=gpu),
        run_config=RunConfig(name=name, storage_path=storage, checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    ran = metrics["epoch"] + 1 - metrics["start_epoch"] if metrics else 0
    history = load_checkpoint_state(result.checkpoint.path)["history"] if result.checkpoint else []
    return {"metrics": metrics, "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "path": result.path, "epochs_run": ran, "history": history}
