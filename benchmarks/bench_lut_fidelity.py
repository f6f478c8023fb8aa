"""LUT fidelity (SpaceEvo §4.5, DONNA §3): does the block-wise KD table rank stand-alone INT8 subnets?

One candidate space of a hyperspace, in one run:

1. its accuracy table, built by :func:`nasq.bkd.build.build_lut` on Ray from the CIFAR-10 train subset,
   restricted to the space's block types (``block_types``: for a homogeneous space exactly its N
   (stage, type) parts), into a work folder named after the build's settings fingerprint (a rerun resumes
   through ``build_lut``'s skip of finished parts, or reuses the finished table);
2. ``--subnets`` distinct subnets of the space spread over the table's estimated INT8 ranking: ``--pool``
   subnets drawn (:meth:`CandidateSpace.sample_subnets`), sorted by the table's summed INT8 NSR loss
   (:func:`nasq.qt_score.subnet_losses`; estimated accuracy = 1 / loss, the §4.2 paper variant), evenly
   spaced quantiles kept, so the ranking is not decided by a few outliers;
3. each subnet trained stand-alone from scratch (stem + blocks + head, :func:`nasq.blocks.torch_blocks.
   build_chain`) with one equal budget: :func:`nasq.models.training.train_steps` (SGD, momentum 0.9,
   weight decay 3e-4, cosine to 0, ``--steps`` x ``--batch-size``, ``--lr``), the same seed for every
   subnet, channels-last tensors (twice as fast for the depthwise convs on this CPU), one torch thread per
   training, trainings run as Ray tasks (one CPU each);
4. fp32 test accuracy (torch) and real INT8 test accuracy on the 2000-image test subset: post-training
   static quantization with ONNX Runtime (QDQ, per-channel int8 weights, uint8 activations, MinMax
   calibration: the U8S8 setting of ``nasq.latency.engines.quantize_onnx``, the engine the latency
   predictor measures) calibrated on ``--calib-batches`` real train batches. nasq's exporter
   (``nasq.latency.engines.export_onnx``) cannot be reused for trained nets: it overwrites BatchNorm
   statistics with random ones, and ``quantize_onnx`` calibrates on random normal inputs; this script
   exports with ``torch.onnx.export`` (opset :data:`nasq.latency.engines.OPSET`) and calibrates on data;
5. Kendall τ (``scipy.stats.kendalltau``, with p-values) of the table's estimate against the measured INT8
   accuracy, beside the cheap proxies (params, FLOPs as MACs from :mod:`nasq.blocks.cost`), and against
   the fp32 accuracy.

Writes ``benchmarks/results/lut_fidelity[_TAG].md`` and ``.csv``. Per-subnet results are cached in the
work folder, so a killed run resumes its trainings too.

Run (about 30-35 min on the 2-core machine): ``.venv/bin/python benchmarks/bench_lut_fidelity.py``;
``--quick`` checks the script end to end in under 3 minutes (tiny table, 3 subnets, a few steps).
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
from pathlib import Path

import numpy as np
from common import (CIFAR_TEST, CIFAR_TRAIN, RESULTS, cpu_model, format_table, machine_note,
                    require_cifar_subset)

TRAIN_NPZ, TEST_NPZ = CIFAR_TRAIN, CIFAR_TEST
DEFAULT_TYPE = "mbv1"
RESULT_VERSION = 1  # bump when the training or evaluation below changes a subnet's numbers

# budget defaults (the full run) and the --quick ones; LUT_* are LutSettings fields
# FULL is sized for about 30-35 min on the 2-core machine (quick-mode timings, load about 2): table about
# 7 min (mbv1 parts: ~450 rows each evaluated twice, ~0.1 s per row at eval_examples 128 + 1 BN batch),
# trainings about 0.24-0.3 s per step at batch 64 with two 1-thread tasks side by side, plus ~10 s of
# ONNX export, quantization and evaluation per subnet: 20 x (400 x 0.27 + 10) / 2 = about 20 min
FULL = {"subnets": 20, "pool": 2000, "steps": 400, "batch_size": 64, "lr": 0.05, "calib_batches": 4,
        "lut": {"teacher_steps": 150, "steps": 60, "qat_steps": 15, "batch_size": 32, "eval_examples": 128,
                "bn_batches": 1, "mixed_rows": 8, "data_limit": None}}
QUICK = {"subnets": 3, "pool": 200, "steps": 4, "batch_size": 32, "lr": 0.05, "calib_batches": 2,
         "lut": {"teacher_steps": 2, "steps": 2, "qat_steps": 1, "batch_size": 16, "eval_examples": 32,
                 "bn_batches": 0, "mixed_rows": 2, "data_limit": 1000}}


def load_u8(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) images and int64 labels of one CIFAR-10 subset npz."""
    from nasq.data import load_npz

    return load_npz(str(path))


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """uint8 NHWC -> float32 NCHW tensor normalised with the train subset's channel statistics."""
    import torch

    f = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return torch.from_numpy(np.ascontiguousarray((f - mean) / std, dtype=np.float32))


class _Batches:
    """ONNX Runtime calibration reader over a fixed list of real input batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = batches
        self._it = iter(batches)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {"x": x}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def int8_accuracy(net, calib: list[np.ndarray], x_test: np.ndarray, y_test: np.ndarray,
                  workdir: Path) -> float:
    """Top-1 % of ``net`` after ONNX Runtime static INT8 quantization (QDQ, U8S8, per channel, MinMax)."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from nasq.latency.engines import OPSET

    workdir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = workdir / "fp32.onnx", workdir / "int8.onnx"
    with torch.no_grad():
        torch.onnx.export(net.eval(), (torch.from_numpy(calib[0][:1]),), str(fp32), opset_version=OPSET,
                          dynamo=False, input_names=["x"], output_names=["y"], do_constant_folding=True,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    quantize_static(str(fp32), str(int8), _Batches(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(y_test), 500):
        logits = sess.run(None, {"x": x_test[i:i + 500]})[0]
        correct += int((logits.argmax(1) == y_test[i:i + 500]).sum())
    return 100.0 * correct / len(y_test)


def train_and_measure(hyperspace: str, space: str, subnet: str, train_u8, test_u8, cfg: dict) -> dict:
    """Train one subnet stand-alone with the shared budget, then its fp32 and ONNX Runtime INT8 accuracy."""
    import tempfile

    import torch
    from torch.utils.data import TensorDataset

    from nasq.blocks.torch_blocks import build_chain
    from nasq.models.training import TrainSettings, evaluate, train_steps
    from nasq.spaces.spaceevo import space_from_name

    torch.set_num_threads(cfg["threads"])
    cand = space_from_name(hyperspace).candidate(space)
    specs = cand.blocks(cand.decode(subnet))
    (xtr, ytr), (xte, yte) = train_u8, test_u8
    f = xtr.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean, std = f.mean(axis=(0, 2, 3), keepdims=True), f.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    del f
    train_x, test_x = normalise(xtr, mean, std), normalise(xte, mean, std)
    train = TensorDataset(train_x.contiguous(memory_format=torch.channels_last), torch.from_numpy(ytr))
    torch.manual_seed(cfg["seed"])
    net = build_chain(specs).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    budget = TrainSettings(steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg["seed"])
    loss = train_steps(net, train, budget)
    train_s = time.perf_counter() - t0
    net = net.to(memory_format=torch.contiguous_format)
    t1 = time.perf_counter()
    fp32 = evaluate(net, TensorDataset(test_x, torch.from_numpy(yte)))
    rng = np.random.default_rng(cfg["seed"])
    calib = [train_x[torch.from_numpy(rng.integers(len(ytr), size=cfg["batch_size"]))].numpy()
             for _ in range(cfg["calib_batches"])]
    with tempfile.TemporaryDirectory(prefix="nasq-lutfid-") as tmp:
        int8 = int8_accuracy(net, calib, test_x.numpy(), yte, Path(tmp))
    return {"subnet": subnet, "train_loss": loss, "fp32_acc": fp32, "int8_acc": int8,
            "train_s": train_s, "eval_s": time.perf_counter() - t1}


def lut_settings(args: argparse.Namespace, block_types: tuple[str, ...], budget: dict):
    """The LutSettings of this run's table (SpaceEvo §4.5 build on the train subset)."""
    from nasq.settings import LutSettings

    return LutSettings.from_dict({
        "dataset": f"npz:{TRAIN_NPZ.resolve()}", "hyperspace": args.hyperspace, "block_types": block_types,
        "teacher_type": args.teacher_type or block_types[0], "seed": args.seed, "cpus_per_task": 1.0,
        **{k: v for k, v in budget.items()}}, "settings")


def pick_subnets(cand, lut, pool: int, k: int, seed: int):
    """``k`` distinct subnets at evenly spaced quantiles of the table's INT8 loss over ``pool`` draws."""
    from nasq.qt_score import subnet_losses

    batch = cand.sample_subnets(pool, np.random.default_rng(seed)).unique()
    loss = subnet_losses(cand, batch, lut)
    order = np.argsort(loss, kind="stable")
    if len(order) < k:
        raise SystemExit(f"only {len(order)} distinct subnets in {pool} draws; raise --pool")
    rows = order[np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))]
    return batch.take(rows), len(batch)


def subnet_costs(cand, sub) -> tuple[int, int]:
    """(params, MACs) of a subnet's chain with BN folded (:func:`nasq.blocks.cost.block_ops`)."""
    from nasq.blocks.cost import block_ops

    ops = [op for spec in cand.blocks(sub) for op in block_ops(spec)]
    return sum(op.params for op in ops), sum(op.macs for op in ops)


def tau(a, b) -> tuple[float, float]:
    """Kendall τ-b and its two-sided p-value."""
    from scipy.stats import kendalltau

    r = kendalltau(a, b)
    return float(r.statistic), float(r.pvalue)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags; ``None`` defaults are filled from the full or the ``--quick`` budget."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hyperspace", default="spaceevo", help="spaceevo[:RES] (default resolution 32)")
    ap.add_argument("--space", default=None,
                    help="space string (default: homogeneous --type at each stage's narrowest window)")
    ap.add_argument("--type", default=DEFAULT_TYPE,
                    help="type of the default homogeneous space (mbv1: the cheapest to train on 2 CPUs)")
    ap.add_argument("--subnets", type=int, default=None, help=f"subnets trained ({FULL['subnets']})")
    ap.add_argument("--pool", type=int, default=None, help=f"subnets drawn to pick from ({FULL['pool']})")
    ap.add_argument("--steps", type=int, default=None, help=f"SGD steps per subnet ({FULL['steps']})")
    ap.add_argument("--batch-size", type=int, default=None, help=f"per step ({FULL['batch_size']})")
    ap.add_argument("--lr", type=float, default=None, help=f"SGD lr, cosine to 0 ({FULL['lr']})")
    ap.add_argument("--calib-batches", type=int, default=None, help="train batches calibrating INT8")
    ap.add_argument("--teacher-type", default=None, help="LUT teacher block type (default: the space's)")
    for k, v in FULL["lut"].items():
        ap.add_argument(f"--lut-{k.replace('_', '-')}", type=int, default=None, dest=f"lut_{k}",
                        help=f"LutSettings.{k} ({v})")
    ap.add_argument("--seed", type=int, default=0, help="subnet draw, initialisation, minibatches, table")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (parallel trainings)")
    ap.add_argument("--work", default="/tmp/nasq-bench-lut-fidelity", help="tables and cached results")
    ap.add_argument("--quick", action="store_true", help="tiny end-to-end check (< 3 min)")
    ap.add_argument("--tag", default=None, help="suffix of the result files (default: quick for --quick)")
    args = ap.parse_args(argv)
    budget = QUICK if args.quick else FULL
    for k in ("subnets", "pool", "steps", "batch_size", "lr", "calib_batches"):
        if getattr(args, k) is None:
            setattr(args, k, budget[k])
    args.lut = {k: (getattr(args, f"lut_{k}") if getattr(args, f"lut_{k}") is not None else v)
                for k, v in budget["lut"].items()}
    if args.tag is None and args.quick:
        args.tag = "quick"
    for k in ("subnets", "pool", "steps", "batch_size", "calib_batches", "cpus"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    if args.subnets < 3:
        ap.error("--subnets must be >= 3 for a rank correlation")
    return args


def main(argv: list[str] | None = None) -> None:
    """Build the table, pick, train and measure the subnets, write the τ table (SpaceEvo §4.5)."""
    args = parse_args(argv)
    import ray

    from nasq.bkd.build import build_lut, fingerprint
    from nasq.bkd.table import AccuracyLUT
    from nasq.qt_score import subnet_losses
    from nasq.spaces.spaceevo import space_from_name

    require_cifar_subset()
    hyper = space_from_name(args.hyperspace)
    space = args.space or hyper.encode(hyper.homogeneous(args.type, 0))
    cand = hyper.candidate(space)
    types = tuple(dict.fromkeys(st.type for st in cand.stages))
    settings = lut_settings(args, types, args.lut)
    work = Path(args.work).expanduser()
    lut_dir = work / f"lut-{fingerprint(settings)}"
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        if (lut_dir / "lut.json").is_file():
            reused = True
        else:
            reused = False
            report = build_lut(settings.check(), lut_dir)
            print(f"LUT: trained {len(report.trained)} parts, skipped {len(report.skipped)}", flush=True)
        lut_wall = time.perf_counter() - t0
        lut = AccuracyLUT.load(lut_dir)
        meta = lut.meta
        picked, distinct = pick_subnets(cand, lut, args.pool, args.subnets, args.seed)
        loss_int8 = subnet_losses(cand, picked, lut)
        loss_fp32 = subnet_losses(cand, picked, lambda i, t, r: lut.losses(i, t, r, "nsr_fp32")[0])
        exact = sum(lut.losses(i, st.type, cand.stage_settings(picked, i))[1]
                    for i, st in enumerate(cand.stages))
        subs = [cand.genome(picked, r) for r in range(len(picked))]
        names = [cand.encode(s) for s in subs]

        cfg = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "calib_batches": args.calib_batches, "threads": 1, "version": RESULT_VERSION}
        cache = work / "subnets"
        cache.mkdir(parents=True, exist_ok=True)

        def cache_file(name: str) -> Path:
            key = json.dumps({"hyperspace": args.hyperspace, "space": space, "subnet": name, **cfg},
                             sort_keys=True)
            return cache / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

        results, todo = {}, []
        for name in names:
            try:
                results[name] = json.loads(cache_file(name).read_text())
            except (OSError, ValueError):
                todo.append(name)
        t1 = time.perf_counter()
        if todo:
            train_ref, test_ref = ray.put(load_u8(TRAIN_NPZ)), ray.put(load_u8(TEST_NPZ))
            task = ray.remote(train_and_measure).options(num_cpus=1, max_retries=0)
            refs = {task.remote(args.hyperspace, space, n, train_ref, test_ref, cfg): n for n in todo}
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                res = ray.get(ready[0])
                cache_file(res["subnet"]).write_text(json.dumps(res))
                results[res["subnet"]] = res
                print(f"[{len(results)}/{len(names)}] fp32 {res['fp32_acc']:.1f}% "
                      f"int8 {res['int8_acc']:.1f}% "
                      f"train {res['train_s']:.1f} s eval {res['eval_s']:.1f} s", flush=True)
        train_wall = time.perf_counter() - t1
    finally:
        ray.shutdown()
    total_wall = time.perf_counter() - t_start
    load1 = max(load_before, os.getloadavg()[0])

    est = 1.0 / loss_int8
    costs = [subnet_costs(cand, s) for s in subs]
    params = np.array([c[0] for c in costs], float)
    flops = np.array([c[1] for c in costs], float)
    fp32 = np.array([results[n]["fp32_acc"] for n in names])
    int8 = np.array([results[n]["int8_acc"] for n in names])
    taus = [("LUT INT8 estimate (1 / Σ nsr_int8)", est), ("params", params), ("FLOPs (MACs)", flops),
            ("LUT fp32 estimate (1 / Σ nsr_fp32)", 1.0 / loss_fp32), ("fp32 accuracy (measured)", fp32)]
    tau_rows = []
    for label, v in taus:
        ti, pi = tau(v, int8)
        tf, pf = tau(v, fp32) if label != "fp32 accuracy (measured)" else (float("nan"), float("nan"))
        vs_int8 = ("n/a (a constant column)", "-") if np.isnan(ti) else (f"{ti:+.3f}", f"{pi:.3g}")
        tau_rows.append((label, *vs_int8,
                         *(("-", "-") if np.isnan(tf) else (f"{tf:+.3f}", f"{pf:.3g}"))))

    secs = meta.get("seconds", {})
    lut_note = (f"LUT: `{lut_dir}` ({'reused' if reused else 'built'} in {lut_wall:.0f} s wall; part "
                f"training "
                f"{meta.get('seconds_total', 0):.0f} s summed over {len(secs)} parts: "
                + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
                + f"); {len(lut)} rows; LutSettings "
                + ", ".join(f"{k}={v}" for k, v in settings.result_fields().items()
                            if k not in ("dataset", "data_root", "hyperspace", "block_types")))
    t_steps = [results[n]["train_s"] / args.steps for n in names]
    flags = "" if argv is None else " ".join(argv)
    cmd = "`.venv/bin/python benchmarks/bench_lut_fidelity.py" + (f" {' '.join(sys.argv[1:])}" if argv is None
                                                                   else f" {flags}") + "`"
    notes = [
        f"{machine_note()}; 1-minute load average {load1:.2f} (max of start and end)",
        f"hyperspace `{args.hyperspace}` (resolution {cand.hyperspace.resolution}), space `{space}`",
        lut_note,
        (f"data: table and trainings on `cifar10_train_20000.npz` (table: its own train/val split"
         f"{'' if settings.data_limit is None else f', data_limit {settings.data_limit}'}); accuracies on "
         "`cifar10_test_2000.npz` (2000 images, never seen by the table or the trainings)"),
        (f"subnets: {len(names)} at evenly spaced quantiles of the table's INT8 loss over {args.pool} draws "
         f"({distinct} distinct), seed {args.seed}; {exact} of {len(names) * len(cand.stages)} stage "
         "settings "
         f"are exact table rows, the rest from the table's estimator ({meta.get('estimator')})"),
        (f"training (each subnet, equal budget): {args.steps} SGD steps x batch {args.batch_size} "
         f"({args.steps * args.batch_size / 20000:.2f} epochs), lr {args.lr} cosine to 0, momentum 0.9, "
         f"wd 3e-4, grad clip 5, seed {args.seed}, no augmentation, channels-last, 1 torch thread, "
         f"{args.cpus} Ray tasks at a time; {np.median(t_steps):.3f} s per step (median, "
         f"{min(t_steps):.3f}-{max(t_steps):.3f}); trainings + evals {train_wall:.0f} s wall"),
        (f"INT8: ONNX Runtime static quantization, QDQ, per-channel int8 weights, uint8 activations, MinMax "
         f"calibration on {args.calib_batches} train batches of {args.batch_size}; fp32 accuracy from torch"),
        f"total wall {total_wall:.0f} s; command: {cmd}",
    ]
    tau_table = format_table(["ranking by", "τ vs INT8 acc", "p", "τ vs fp32 acc", "p"], tau_rows)
    order = np.argsort(-est)
    headers = ["rank (LUT)", "subnet", "LUT est. (1/L)", "Σ nsr_int8", "params", "MMACs", "fp32 acc %",
               "INT8 acc %", "train s"]
    rows = [(j + 1, f"`{names[r]}`", f"{est[r]:.4f}", f"{loss_int8[r]:.3f}", int(params[r]),
             f"{flops[r] / 1e6:.1f}", f"{fp32[r]:.2f}", f"{int8[r]:.2f}",
             f"{results[names[r]]['train_s']:.1f}")
            for j, r in enumerate(order)]
    name = "lut_fidelity" + (f"_{args.tag}" if args.tag else "")
    title = "LUT fidelity: Kendall τ of the block-wise KD table vs stand-alone INT8 accuracy (SpaceEvo §4.5)"
    text = "\n".join([f"# {title}", "", *[f"- {n}" for n in notes], "", tau_table, "",
                      format_table(headers, rows), ""])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    import csv

    model = cpu_model()
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subnet", "lut_est", "loss_int8", "loss_fp32", "params", "macs", "fp32_acc", "int8_acc",
                    "train_s", "eval_s", "train_loss", "steps", "batch_size", "lr", "seed", "load1",
                    "cpu_model"])
        for r in order:
            res = results[names[r]]
            w.writerow([names[r], f"{est[r]:.6f}", f"{loss_int8[r]:.6f}", f"{loss_fp32[r]:.6f}",
                        int(params[r]), int(flops[r]), res["fp32_acc"], res["int8_acc"],
                        f"{res['train_s']:.2f}", f"{res['eval_s']:.2f}", f"{res['train_loss']:.4f}",
                        args.steps, args.batch_size, args.lr, args.seed, f"{load1:.2f}", model])
    print(text)


if __name__ == "__main__":
    main()
