"""Quantized-for-all supernet (SpaceEvo §5, issue 9): weight-sharing quality and training throughput.

Section ``quality``: one candidate space (default ``SPACE`` in ``spaceevo-tiny:32``, the 3-stage test twin
at CIFAR-10's 32 px: stage strides 2,2,2; one mbv3, one fused_mb_se, one resnet_bottleneck stage).

1. The supernet (:class:`nasq.supernet.Supernet`) is trained in-process with the plain-PyTorch loop of
   :mod:`nasq.supernet.train`: ``--steps`` fp32 sandwich steps (largest on the labels, smallest and
   ``--n-random`` random subnets on its soft labels; :func:`~nasq.supernet.train.train_epoch`), then
   LSQ+ (:func:`~nasq.supernet.launch.init_quantizers`) and ``--qat-steps`` fake-quant sandwich steps.
   SGD momentum 0.9, cosine to 0 per phase (:func:`~nasq.supernet.launch.make_optimizer`), grad clip 5.
2. ``--subnets`` subnets: the smallest, the largest and the rest at evenly spaced MAC quantiles of
   ``--pool`` seeded draws. Inherited accuracy: fake-INT8 (LSQ+) test accuracy with the supernet's
   weights, BN recalibrated on ``--bn-batches`` train batches, no retraining.
3. Stand-alone: the same subnet trained from the same initial weights (a fresh Supernet fixed to it,
   so the LSQ+ quantizers are the same modules) with the same recipe: ``--steps`` fp32 steps then
   ``--qat-steps`` LSQ+ steps, the same batches, lr, schedule and clip, cross-entropy on the labels (no
   teacher). Budget: each stand-alone subnet gets as many SGD steps x batch as the supernet run took.
   In a sandwich step the largest and the smallest get one gradient each on every batch and every
   subnet's weights (a slice of the largest's) are updated by every step, so this equals what the
   supernet's fixed members received and bounds from above what a random subnet received directly;
   it charges the supernet nothing for sharing (the supernet's compute is ~(2 + n_random) x one subnet's).
4. Kendall τ (``scipy.stats.kendalltau``) of inherited vs stand-alone INT8 accuracy, the mean gap
   (stand-alone − inherited, points); issue targets τ >= 0.7, mean gap <= 1 pt.

Data: ``cifar10_train_20000.npz`` (training, BN calibration), ``cifar10_test_2000.npz`` (all accuracies).
Trainings run as ``--jobs`` processes (1 torch thread each, channels-last); results are cached per job
in ``--work``, so a killed run resumes.

Section ``throughput``: :func:`nasq.supernet.launch.train_supernet` (Ray Train, gloo) with 1 and 2 workers
at the same global batch (1 x B and 2 x B/2: the same steps, samples and recipe per epoch, so the
speed-up is what one run gets from a second worker), ``--tp-epochs`` fp32 epochs of which the first is
warm-up; per-epoch seconds are the :func:`~nasq.supernet.train.train_epoch` time of each worker (the
slowest rank), recorded by a wrapper installed in every Ray worker through ``worker_process_setup_hook``
(``train_supernet`` reports no times). Then the fake-quant cost: ``--tp-pairs`` interleaved pairs of
in-process :func:`~nasq.supernet.train.sandwich_step` calls, fp32 and LSQ+ on the same batch and subnets.

Run (about 60 min on the shared 2-core machine at load ~15, most of it the quality section)::

    nice -n 5 .venv/bin/python benchmarks/bench_supernet.py
    nice -n 5 .venv/bin/python benchmarks/bench_supernet.py --sections quality --steps 600 --batch-size 64
    nice -n 5 .venv/bin/python benchmarks/bench_supernet.py --sections throughput --tp-limit 2000
    .venv/bin/python benchmarks/bench_supernet.py --quick      # end-to-end check, about 2-3 min

Writes ``benchmarks/results/supernet_quality[_TAG].{md,csv}`` and ``supernet_throughput[_TAG].{md,csv}``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CIFAR_TEST, CIFAR_TRAIN, machine_note, median,  # noqa: E402
                    require_cifar_subset, write_results)

TRAIN_NPZ, TEST_NPZ = CIFAR_TRAIN, CIFAR_TEST
HYPERSPACE = "spaceevo-tiny:32"
SPACE = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck:32-40"
RESULT_VERSION = 1  # bump when training or evaluation below changes a job's numbers
# FULL fits about 60 min on the 2 shared cores at this session's share (~0.35 core, load 15): CPU seconds
# per step at batch 32 about 0.5 (sandwich fp32), 1.1 (sandwich LSQ+), 0.12 / 0.25 (a mid subnet alone)
FULL = {"subnets": 10, "pool": 500, "steps": 300, "qat_steps": 100, "batch_size": 32, "bn_batches": 16,
        "tp_limit": 600, "tp_epochs": 4, "tp_pairs": 5}
QUICK = {"subnets": 4, "pool": 50, "steps": 6, "qat_steps": 3, "batch_size": 32, "bn_batches": 2,
         "tp_limit": 300, "tp_epochs": 2, "tp_pairs": 2}


# -- data ---------------------------------------------------------------------------------------------
def load_cifar(cfg: dict):
    """Normalised float (N, 3, 32, 32) train and test tensors (train statistics) and int64 labels."""
    import torch

    from nasq.data import load_npz

    (xtr, ytr), (xte, yte) = load_npz(str(TRAIN_NPZ)), load_npz(str(TEST_NPZ))
    f = xtr.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean, std = f.mean(axis=(0, 2, 3), keepdims=True), f.std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def norm(x: np.ndarray) -> torch.Tensor:
        t = (x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - mean) / std
        return torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))

    return norm(xtr), torch.from_numpy(ytr.astype(np.int64)), norm(xte), torch.from_numpy(yte.astype(np.int64))


def batches(x, y, batch: int, seed: int, first: int, last: int):
    """Minibatches of global steps ``first`` … ``last - 1``: epoch ``e`` is a ``(seed, e)`` permutation."""
    import torch

    per_epoch = len(y) // batch
    for t in range(first, last):
        e, b = divmod(t, per_epoch)
        idx = torch.from_numpy(np.random.default_rng([seed, e]).permutation(len(y))[b * batch:(b + 1) * batch])
        yield x[idx].contiguous(memory_format=torch.channels_last), y[idx]


def test_loader(x, y, size: int = 500) -> list:
    """The test split as channels-last batches."""
    import torch

    return [(x[i:i + size].contiguous(memory_format=torch.channels_last), y[i:i + size])
            for i in range(0, len(y), size)]


# -- training (one job = one process) ------------------------------------------------------------------
def fresh_supernet(cfg: dict):
    """The space's supernet with the run's initial weights (equal for every job), channels-last."""
    import torch

    from nasq.supernet import Supernet

    torch.set_num_threads(1)
    torch.manual_seed(cfg["seed"])
    return Supernet.from_string(cfg["space"], cfg["hyperspace"]).to(memory_format=torch.channels_last)


def train_supernet_inplace(cfg: dict, subnets: list[str]) -> dict:
    """Sandwich-rule fp32 then LSQ+ phase (SpaceEvo §5), then each subnet's inherited fake-INT8 accuracy."""
    from nasq.supernet import SupernetTrainSettings, evaluate, train_epoch
    from nasq.supernet.launch import init_quantizers, make_optimizer

    xtr, ytr, xte, yte = load_cifar(cfg)
    net = fresh_supernet(cfg)
    st = SupernetTrainSettings(n_random=cfg["n_random"], seed=cfg["seed"])
    F, Q, B = cfg["steps"], cfg["qat_steps"], cfg["batch_size"]
    t0 = time.perf_counter()
    opt, sched = make_optimizer(net, cfg["lr"], F)
    fp32 = train_epoch(net, batches(xtr, ytr, B, cfg["seed"], 0, F), opt, st, 0, sched) if F else {}
    t1 = time.perf_counter()
    first = next(batches(xtr, ytr, B, cfg["seed"], F, F + 1))[0]
    left = init_quantizers(net, first, cfg["seed"])
    opt, sched = make_optimizer(net, cfg["qat_lr"], Q)
    qat = train_epoch(net, batches(xtr, ytr, B, cfg["seed"], F, F + Q), opt, st, F, sched)
    t2 = time.perf_counter()
    calib = list(batches(xtr, ytr, B, cfg["seed"] + 1, 0, cfg["bn_batches"]))
    test = test_loader(xte, yte)
    acc = {s: 100.0 * evaluate(net, s, test, calib, cfg["bn_batches"]) for s in subnets}
    return {"kind": "supernet", "acc": acc, "fp32_s": t1 - t0, "qat_s": t2 - t1,
            "eval_s": time.perf_counter() - t2, "loss_fp32": fp32, "loss_qat": qat, "uninitialised": left}


def ce_steps(net, loader, opt, sched, clip: float) -> float:
    """Plain cross-entropy SGD steps on the active subnet; the mean loss."""
    import torch
    import torch.nn.functional as F

    net.train()
    total = n = 0
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        sched.step()
        total, n = total + float(loss.detach()), n + 1
    return total / max(n, 1)


def train_standalone(cfg: dict, subnet: str) -> dict:
    """``subnet`` trained alone from the supernet's initial weights, fp32 then LSQ+, same budget (§5)."""
    import torch

    from nasq.quant.lsq import set_quant
    from nasq.supernet import evaluate
    from nasq.supernet.launch import make_optimizer

    xtr, ytr, xte, yte = load_cifar(cfg)
    net = fresh_supernet(cfg)
    net.set_active(subnet)
    F, Q, B, clip = cfg["steps"], cfg["qat_steps"], cfg["batch_size"], 5.0
    t0 = time.perf_counter()
    opt, sched = make_optimizer(net, cfg["lr"], F)
    loss_fp32 = ce_steps(net, batches(xtr, ytr, B, cfg["seed"], 0, F), opt, sched, clip)
    t1 = time.perf_counter()
    set_quant(net, True)  # LSQ+ init from the subnet's own first QAT batch (not from the largest)
    with torch.no_grad():
        net.train()
        net(next(batches(xtr, ytr, B, cfg["seed"], F, F + 1))[0])
    opt, sched = make_optimizer(net, cfg["qat_lr"], Q)
    loss_qat = ce_steps(net, batches(xtr, ytr, B, cfg["seed"], F, F + Q), opt, sched, clip)
    t2 = time.perf_counter()
    acc = 100.0 * evaluate(net, subnet, test_loader(xte, yte))
    return {"kind": "standalone", "subnet": subnet, "acc": acc, "fp32_s": t1 - t0, "qat_s": t2 - t1,
            "loss_fp32": loss_fp32, "loss_qat": loss_qat}


def run_job(cfg: dict, kind: str, payload) -> dict:
    """Process-pool entry: one supernet run or one stand-alone training."""
    return train_supernet_inplace(cfg, payload) if kind == "supernet" else train_standalone(cfg, payload)


# -- section 1: quality ---------------------------------------------------------------------------------
def subnet_macs(cand, genome) -> tuple[int, int]:
    """(params, MACs) of a subnet's chain, BN folded (:func:`nasq.blocks.cost.block_ops`)."""
    from nasq.blocks.cost import block_ops

    ops = [op for spec in cand.blocks(genome) for op in block_ops(spec)]
    return sum(op.params for op in ops), sum(op.macs for op in ops)


def pick_subnets(cand, pool: int, k: int, seed: int) -> list[str]:
    """Smallest, largest and ``k - 2`` subnets at evenly spaced MAC quantiles of ``pool`` seeded draws."""
    batch = cand.sample_subnets(pool, np.random.default_rng(seed)).unique()
    drawn = [cand.genome(batch, r) for r in range(len(batch))]
    drawn = [g for g in drawn if g not in (cand.smallest(), cand.largest())]
    if len(drawn) < k - 2:
        raise SystemExit(f"only {len(drawn)} distinct inner subnets in {pool} draws; raise --pool")
    drawn.sort(key=lambda g: subnet_macs(cand, g)[1])
    inner = np.unique(np.round(np.linspace(0, len(drawn) - 1, k)[1:-1]).astype(int))
    return [cand.encode(g) for g in [cand.smallest(), *(drawn[i] for i in inner), cand.largest()]]


def run_jobs(cfg: dict, subnets: list[str], work: Path, jobs: int) -> dict:
    """Run (or load from the cache) the supernet job and every stand-alone job; {key: result}."""
    work.mkdir(parents=True, exist_ok=True)

    def cache(kind: str, payload) -> Path:
        key = json.dumps({"kind": kind, "payload": payload, **cfg}, sort_keys=True)
        return work / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    todo = [("supernet", subnets)] + [("standalone", s) for s in subnets]
    done, pending = {}, []
    for kind, payload in todo:
        try:
            done[cache(kind, payload)] = json.loads(cache(kind, payload).read_text())
        except (OSError, ValueError):
            pending.append((kind, payload))
    if pending:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futs = {pool.submit(run_job, cfg, k, p): (k, p) for k, p in pending}
            for fut in as_completed(futs):
                res, path = fut.result(), cache(*futs[fut])
                path.write_text(json.dumps(res))
                done[path] = res
                what = "supernet" if res["kind"] == "supernet" else f"stand-alone {res['acc']:.1f}%"
                print(f"[{len(done)}/{len(todo)}] {what}: fp32 {res['fp32_s']:.0f} s, QAT {res['qat_s']:.0f} s",
                      flush=True)
    return {("supernet" if r["kind"] == "supernet" else r["subnet"]): r for r in done.values()}


def tau(a, b) -> tuple[float, float]:
    """Kendall τ-b and its two-sided p-value."""
    from scipy.stats import kendalltau

    r = kendalltau(a, b)
    return float(r.statistic), float(r.pvalue)


def quality(args: argparse.Namespace, cfg: dict) -> None:
    """Section 1: inherited vs stand-alone fake-INT8 accuracy of ``--subnets`` subnets (SpaceEvo §5)."""
    from nasq.spaces.spaceevo import space_from_name

    cand = space_from_name(cfg["hyperspace"]).candidate(cfg["space"])
    subnets = pick_subnets(cand, args.pool, args.subnets, cfg["seed"])
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    res = run_jobs(cfg, subnets, Path(args.work).expanduser() / "quality", args.jobs)
    wall, sup = time.perf_counter() - t0, res["supernet"]
    inh = np.array([sup["acc"][s] for s in subnets])
    alone = np.array([res[s]["acc"] for s in subnets])
    costs = [subnet_macs(cand, cand.decode(s)) for s in subnets]
    macs = np.array([c[1] for c in costs], float)
    t_ia, p_ia = tau(inh, alone)
    t_ma, p_ma = tau(macs, alone)
    gap = alone - inh
    met = "met" if t_ia >= 0.7 and gap.mean() <= 1.0 else "NOT met"
    samples = (cfg["steps"] + cfg["qat_steps"]) * cfg["batch_size"]
    alone_s = [res[s]["fp32_s"] + res[s]["qat_s"] for s in subnets]
    notes = [
        f"{machine_note()}; 1-minute load {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        f"hyperspace `{cfg['hyperspace']}`, space `{cfg['space']}`; {len(subnets)} subnets: smallest, largest "
        f"and {len(subnets) - 2} at evenly spaced MAC quantiles of {args.pool} draws (seed {cfg['seed']})",
        f"**Kendall τ (inherited vs stand-alone INT8) = {t_ia:+.3f} (p = {p_ia:.3g}); mean gap stand-alone − "
        f"inherited = {gap.mean():+.2f} pt (median {np.median(gap):+.2f}, range {gap.min():+.2f} … "
        f"{gap.max():+.2f}); issue target τ >= 0.7 and gap <= 1 pt: {met}** (τ of MACs vs stand-alone: "
        f"{t_ma:+.3f}, p = {p_ma:.3g})",
        f"budget per subnet (both sides): {cfg['steps']} fp32 + {cfg['qat_steps']} LSQ+ SGD steps x batch "
        f"{cfg['batch_size']} = {samples} samples ({samples / 20000:.2f} epochs of the 20,000 train images); "
        f"the supernet's {cfg['steps'] + cfg['qat_steps']} sandwich steps each train largest, smallest and "
        f"{cfg['n_random']} random subnets (inplace distillation, T 1), so its compute is "
        f"~{2 + cfg['n_random']}x one subnet's budget, shared by all subnets",
        f"recipe: SGD momentum 0.9, no weight decay, cosine to 0 per phase, lr {cfg['lr']} (fp32) and "
        f"{cfg['qat_lr']} (LSQ+), grad clip 5, no augmentation, same batches and initial weights on both "
        "sides; stand-alone = fresh Supernet fixed to the subnet, cross-entropy, LSQ+ initialised on its own "
        "batch; supernet LSQ+ start = `init_quantizers` (largest, smallest, 16 draws)",
        f"accuracy: fake INT8 (LSQ+ per-channel int8 weights, per-tensor uint8 activations) on "
        f"`cifar10_test_2000.npz` (2000 images); inherited with BN recalibrated on {cfg['bn_batches']} train "
        f"batches of {cfg['batch_size']}, stand-alone with its own running statistics",
        f"wall: supernet {sup['fp32_s']:.0f} s fp32 + {sup['qat_s']:.0f} s LSQ+ + {sup['eval_s']:.0f} s "
        f"evaluation; stand-alone {median(alone_s):.0f} s median per subnet ({min(alone_s):.0f}-"
        f"{max(alone_s):.0f}); {args.jobs} processes, 1 torch thread each, channels-last; section wall "
        f"{wall:.0f} s (0 if all cached); supernet largest-member loss, mean over the phase: fp32 "
        f"{sup['loss_fp32'].get('largest', float('nan')):.3f} (largest), LSQ+ {sup['loss_qat']['largest']:.3f}",
        f"command: `{' '.join(['nice -n 5 .venv/bin/python benchmarks/bench_supernet.py', *sys.argv[1:]])}`",
    ]
    order = np.argsort(macs)
    headers = ["subnet", "MMACs", "params", "inherited INT8 %", "stand-alone INT8 %", "gap pt"]
    rows = [(f"`{subnets[i]}`", f"{macs[i] / 1e6:.2f}", int(costs[i][0]), f"{inh[i]:.2f}", f"{alone[i]:.2f}",
             f"{gap[i]:+.2f}") for i in order]
    raw_h = ["subnet", "macs", "params", "inherited_int8_acc", "standalone_int8_acc", "gap_pt", "steps",
             "qat_steps", "batch_size", "standalone_train_s", "standalone_loss_qat", "seed"]
    raw = [(subnets[i], int(macs[i]), int(costs[i][0]), f"{inh[i]:.2f}", f"{alone[i]:.2f}", f"{gap[i]:.2f}",
            cfg["steps"], cfg["qat_steps"], cfg["batch_size"], f"{alone_s[i]:.1f}",
            f"{res[subnets[i]]['loss_qat']:.4f}", cfg["seed"]) for i in order]
    title = "Supernet weight-sharing quality: inherited vs stand-alone fake-INT8 accuracy (SpaceEvo §5)"
    write_results(result_name("supernet_quality", args), title, notes, headers, rows, (raw_h, raw))


# -- section 2: throughput ------------------------------------------------------------------------------
def _timing_hook() -> None:
    """Ray worker setup hook: wrap ``launch.train_epoch`` to append each call's seconds to a JSONL file."""
    import nasq.supernet.launch as launch

    inner = launch.train_epoch

    def timed(model, loader, *a, **k):
        import ray.train

        t = time.perf_counter()
        out = inner(model, loader, *a, **k)
        ctx = ray.train.get_context()
        rec = {"rank": ctx.get_world_rank(), "world": ctx.get_world_size(), "steps": len(loader),
               "seconds": time.perf_counter() - t, "pid": os.getpid()}
        with open(os.environ["NASQ_BENCH_TIMES"], "a") as f:
            f.write(json.dumps(rec) + "\n")
        return out

    launch.train_epoch = timed


def ray_epochs(args, workers: int, batch: int, storage: Path, times: Path) -> dict:
    """One fresh ``train_supernet`` run; per-epoch seconds (slowest rank) and the call's wall time."""
    from nasq.settings import SupernetSettings
    from nasq.supernet.launch import train_supernet

    times.write_text("")
    s = SupernetSettings(space=args.space, hyperspace=args.hyperspace, dataset=f"npz:{TRAIN_NPZ}",
                         data_limit=args.tp_limit, epochs=args.tp_epochs, qat_epochs=0, workers=workers,
                         batch_size=batch, bn_batches=1, n_random=args.n_random, seed=args.seed, device="cpu")
    t0 = time.perf_counter()
    out = train_supernet(s, str(storage), f"w{workers}-b{batch}-{time.time_ns()}")
    wall = time.perf_counter() - t0
    recs = [json.loads(line) for line in times.read_text().splitlines() if line.strip()]
    by_rank: dict[int, list[float]] = {}
    for r in recs:
        by_rank.setdefault(r["rank"], []).append(r["seconds"])
    epochs = [max(v) for v in zip(*by_rank.values())] if by_rank else []
    steps = recs[0]["steps"] if recs else 0
    return {"epochs": epochs, "steps": steps, "wall": wall, "acc": out["metrics"].get("acc_largest")}


def qat_cost(args, cfg: dict) -> dict:
    """Interleaved in-process sandwich steps, fp32 vs LSQ+ on the same batch and subnets (§5, LSQ+)."""
    import torch

    from nasq.quant.lsq import set_quant
    from nasq.supernet import sandwich_step
    from nasq.supernet.launch import init_quantizers

    xtr, ytr, _, _ = load_cifar(cfg)
    out = {}
    for layout in ("contiguous", "channels-last"):
        net = fresh_supernet(cfg)
        if layout == "contiguous":
            net = net.to(memory_format=torch.contiguous_format)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        data = list(batches(xtr, ytr, cfg["batch_size"], cfg["seed"], 0, args.tp_pairs + 1))
        if layout == "contiguous":
            data = [(x.contiguous(), y) for x, y in data]
        init_quantizers(net, data[0][0], cfg["seed"])
        ts = {False: [], True: []}
        for i, (x, y) in enumerate(data):
            for q in (False, True):
                set_quant(net, q)
                t = time.perf_counter()
                sandwich_step(net, x, y, opt, [cfg["seed"], i], cfg["n_random"], grad_clip=5.0)
                if i:  # the first pair is warm-up
                    ts[q].append(time.perf_counter() - t)
        out[layout] = ts
    return out


def throughput(args: argparse.Namespace, cfg: dict) -> None:
    """Section 2: samples/s with 1 vs 2 Ray Train workers; LSQ+ step time / fp32 step time."""
    import ray

    work = Path(args.work).expanduser() / "throughput"
    work.mkdir(parents=True, exist_ok=True)
    times = work / "epoch_times.jsonl"
    load0 = os.getloadavg()[0]
    B = args.tp_batch
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _timing_hook,
                          "env_vars": {"NASQ_BENCH_TIMES": str(times), "OMP_NUM_THREADS": "1"}})
    try:
        runs = {w: ray_epochs(args, w, B // w, work / "ray", times) for w in (1, 2)}
    finally:
        ray.shutdown()
    load1 = os.getloadavg()[0]
    pairs = qat_cost(args, cfg)
    rows, raw = [], []
    base = None
    for w, r in runs.items():
        timed = r["epochs"][1:] if len(r["epochs"]) > 1 else r["epochs"]
        ep = median(timed) if timed else float("nan")
        sps = r["steps"] * B / ep if timed else float("nan")
        base = sps if base is None and timed else base
        label = f"train_supernet, {w} worker{'s' * (w > 1)} x {B // w}"
        if not timed:
            rows.append((label, B, "-", "no epoch times recorded", "-", "-", 0, f"{r['wall']:.0f}"))
            continue
        rows.append((label, B, r["steps"], f"{ep:.2f}", f"{sps:.1f}", f"{sps / base:.2f}x", len(timed),
                     f"{r['wall']:.0f}"))
        raw += [("ray", w, B // w, B, r["steps"], i, f"{s:.3f}", f"{r['wall']:.1f}")
                for i, s in enumerate(r["epochs"])]
    for layout, ts in pairs.items():
        f, q = median(ts[False]), median(ts[True])
        ratio = median([b / a for a, b in zip(ts[False], ts[True])])
        for label, v, rel in (("fp32", f, "1.00x"), ("LSQ+ fake-quant", q, f"{ratio:.2f}x (QAT / fp32)")):
            rows.append((f"sandwich_step in-process, {layout}, {label}", cfg["batch_size"], 1, f"{v:.3f}",
                         f"{cfg['batch_size'] / v:.1f}", rel, len(ts[False]), "-"))
        raw += [("step-" + layout, 1, cfg["batch_size"], cfg["batch_size"], 1, i, f"{a:.3f}|{b:.3f}", "")
                for i, (a, b) in enumerate(zip(ts[False], ts[True]))]
    notes = [
        f"{machine_note()}; 1-minute load {load0:.2f} before the Ray runs, {load1:.2f} after, "
        f"{os.getloadavg()[0]:.2f} at end (machine shared with another benchmark: absolute figures are low "
        "and noisy, and a second worker competes with the other jobs for the 2 cores)",
        f"hyperspace `{args.hyperspace}`, space `{args.space}`, sandwich with {args.n_random} random subnets",
        f"Ray Train (TorchTrainer, gloo, DDP find_unused_parameters, 1 torch thread per worker): "
        f"`train_supernet`, {args.tp_epochs} fp32 epochs of `cifar10_train_20000.npz` limited to "
        f"{args.tp_limit} images (70% train split); same global batch {B} (1 x {B}, 2 x {B // 2}), so both "
        "runs take the same steps per epoch; epoch time = `train_epoch` time of the slowest rank, median "
        "over the epochs after the first (warm-up); wall = the whole call (Ray Train start, data, "
        "per-epoch evaluation and checkpoints)",
        f"fake-quant cost: {args.tp_pairs} interleaved pairs (after 1 warm-up pair) of `sandwich_step` on one "
        f"process, fp32 then LSQ+ on the same batch of {cfg['batch_size']} and subnets; ratio = median of "
        "per-pair LSQ+/fp32",
        f"command: `{' '.join(['nice -n 5 .venv/bin/python benchmarks/bench_supernet.py', *sys.argv[1:]])}`",
    ]
    headers = ["configuration", "global batch", "steps/epoch", "median s (epoch or step)", "samples/s",
               "relative", "repeats", "wall s"]
    title = "Supernet training throughput: Ray Train workers and LSQ+ fake-quant cost (SpaceEvo §5)"
    write_results(result_name("supernet_throughput", args), title, notes, headers, rows,
                  (["what", "workers", "batch_per_worker", "global_batch", "steps", "repeat", "seconds",
                    "wall_s"], raw))


# -- CLI ------------------------------------------------------------------------------------------------
def result_name(base: str, args: argparse.Namespace) -> str:
    """Result file name with the run's tag."""
    return base + (f"_{args.tag}" if args.tag else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags; ``None`` defaults come from the full or the ``--quick`` budget."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="quality,throughput", help="comma list: quality, throughput")
    ap.add_argument("--hyperspace", default=HYPERSPACE, help=f"space_from_name name ({HYPERSPACE})")
    ap.add_argument("--space", default=SPACE, help=f"candidate space string ({SPACE})")
    for k, v in FULL.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None, help=f"(full run: {v})")
    ap.add_argument("--lr", type=float, default=0.05, help="fp32 SGD lr, cosine to 0")
    ap.add_argument("--qat-lr", type=float, default=0.01, help="LSQ+ phase SGD lr, cosine to 0")
    ap.add_argument("--n-random", type=int, default=2, help="random subnets per sandwich step")
    ap.add_argument("--tp-batch", type=int, default=64, help="global batch of the Ray Train runs")
    ap.add_argument("--seed", type=int, default=0, help="initial weights, batches, subnet draws")
    ap.add_argument("--jobs", type=int, default=2, help="training processes at a time (quality)")
    ap.add_argument("--work", default="/tmp/nasq-bench-supernet", help="cache of job results, Ray runs")
    ap.add_argument("--quick", action="store_true", help="tiny end-to-end check (about 2-3 min)")
    ap.add_argument("--tag", default=None, help="result file suffix (default: quick for --quick)")
    args = ap.parse_args(argv)
    budget = QUICK if args.quick else FULL
    for k, v in budget.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.tag is None and args.quick:
        args.tag = "quick"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not set(args.sections) <= {"quality", "throughput"} or not args.sections:
        ap.error(f"--sections takes quality and/or throughput, got {','.join(args.sections)!r}")
    for k in ("steps", "qat_steps", "batch_size", "bn_batches", "tp_limit", "tp_epochs", "tp_pairs", "jobs"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    if args.subnets < 3:
        ap.error("--subnets must be >= 3 for a rank correlation")
    if args.tp_batch < 4 or args.tp_batch % 2:
        ap.error(f"--tp-batch must be an even number >= 4 (split over 2 workers), got {args.tp_batch}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the chosen sections and write their tables."""
    args = parse_args(argv)
    require_cifar_subset()
    cfg = {"hyperspace": args.hyperspace, "space": args.space, "steps": args.steps, "qat_steps": args.qat_steps,
           "batch_size": args.batch_size, "lr": args.lr, "qat_lr": args.qat_lr, "n_random": args.n_random,
           "bn_batches": args.bn_batches, "seed": args.seed, "version": RESULT_VERSION}
    t0 = time.perf_counter()
    if "quality" in args.sections:
        quality(args, cfg)
    if "throughput" in args.sections:
        throughput(args, cfg)
    print(f"total wall {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
