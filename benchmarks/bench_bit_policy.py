"""Bit policy vs uniform quantization on one trained network (JASQ §4.1, Table 1).

A torchvision ResNet18 (stem and stages as in torchvision, run on 32x32 inputs) is trained in float
on part of the CIFAR-10 subset in ``../shared/data/cifar10`` on the CPU, then a tournament search
(JASQ Alg. 1, through ``nasq.runner.run_search`` on Ray Tune) picks one bit width per layer from
{4, 8, 16} with Eq. 1 fitness and a target size set to a fraction of the uniform 8-bit model. The
policy is chosen on the validation split; accuracies in the table are on the test split.

Targets (seed Table 1, ResNet18: 0.63x size at +0.38 points): the found policy's size <= 0.63x of
uniform 8-bit, test accuracy no worse than -0.2 points, and strictly better than uniform 4-bit.

Test images: the separate CIFAR-10 test subset ``cifar10_test_2000.npz`` when present (``--test-data``;
the 20,000 training images are then split into train and validation only), and every accuracy
difference comes with a paired bootstrap 95 % interval over the test images (``--bootstrap`` resamples
of the per-image correctness of both models), so a difference of one or two images is seen as noise.
``--model mobilenet_v2`` runs the same study on a MobileNet (JASQ's claim: a learned policy beats float
on MobileNet-v1 by 1.02 points; torchvision has v2 and v3, not v1).

    .venv/bin/python benchmarks/bench_bit_policy.py [--model resnet18|mobilenet_v2] [--limit 20000
        --epochs 10 --samples 120] [--test-data npz:PATH | --test-data none]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_note  # noqa: E402

from nasq import runner  # noqa: E402
from nasq.data import load_dataset  # noqa: E402
from nasq.models.torchvision_nets import bits_for_layers, build_torchvision, quantizable_layers  # noqa: E402
from nasq.quant.policy import quantized_copy, train_float  # noqa: E402
from nasq.quant.policy_report import baseline_rows, markdown_table, policy_row, write_policy_report  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10_train_20000.npz"
TEST = DATA.with_name("cifar10_test_2000.npz")
CACHE = Path(os.environ.get("NASQ_BENCH_CACHE", Path(tempfile.gettempdir()) / "nasq-bench"))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument(
        "--limit", type=int, default=20000, help="images of the CIFAR-10 subset used (train+val+test)"
    )
    p.add_argument("--epochs", type=float, default=10.0, help="float training epochs")
    p.add_argument("--samples", type=int, default=120, help="search trials")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--sample-size", type=int, default=4)
    p.add_argument(
        "--target-fraction", type=float, default=0.6, help="TS as a fraction of the uniform 8-bit size"
    )
    p.add_argument("--gamma", type=float, default=-1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-data", default=f"npz:{TEST}" if TEST.is_file() else "none",
                   help="separate test set npz:PATH (default: the shared CIFAR-10 test subset), or none")
    p.add_argument("--bootstrap", type=int, default=10000, help="paired bootstrap resamples of the test set")
    return p.parse_args()


def correct_vector(net: torch.nn.Module, bits: list[int], data, bucket_size: int = 256) -> np.ndarray:
    """Per-image correctness (bool) of ``net`` quantized with per-layer ``bits`` (JASQ §3.4) on ``data``."""
    qnet, _ = quantized_copy(net, net.state_dict(), bits_for_layers(net, bits), bucket_size)
    x, y = data.tensors
    with torch.no_grad():
        pred = torch.cat([qnet(x[i:i + 500]).argmax(1) for i in range(0, len(y), 500)])
    return (pred == y).numpy()


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy difference a - b in points and its paired bootstrap 95 % interval over the same images."""
    rng = np.random.default_rng(seed)
    d = a.astype(np.float64) - b.astype(np.float64)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1) * 100
    return float(d.mean() * 100), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def trained_network(args: argparse.Namespace, spec: str, splits) -> tuple[torch.nn.Module, Path, float]:
    """Train (or reuse the cached) float network; return it, its state-dict path and train seconds."""
    CACHE.mkdir(parents=True, exist_ok=True)
    held = "" if args.test_data == "none" else "_sep-test"  # a separate test set: more training images
    path = CACHE / f"{args.model}_cifar{args.limit}_e{args.epochs:g}_s{args.seed}{held}.pt"
    net = build_torchvision(args.model, splits.num_classes, splits.input_shape)
    seconds_file = path.with_suffix(".json")
    if path.is_file() and seconds_file.is_file():  # trained by an earlier run: report its training time
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval(), path, float(json.loads(seconds_file.read_text())["train_seconds"])
    stats = train_float(net, splits, args.epochs, lr=0.05, batch_size=128, seed=args.seed)
    torch.save(net.state_dict(), path)
    seconds_file.write_text(json.dumps(stats))
    return net.eval(), path, stats["train_seconds"]


def main() -> int:
    args = parse()
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    spec = f"npz:{DATA}"
    splits = load_dataset(spec, seed=args.seed, limit=args.limit,
                          test_data=None if args.test_data == "none" else args.test_data)
    net, ckpt, train_s = trained_network(args, spec, splits)
    base = baseline_rows(net, splits)
    by = {r["method"]: r for r in base}
    u8, u4 = by["uniform 8-bit"], by["uniform 4-bit"]
    target = args.target_fraction * u8["size_mb"]
    cfg = {
        "model": args.model,
        "num_layers": len(quantizable_layers(net)),
        "dataset": spec,
        "data_root": None,
        "data_seed": args.seed,
        "data_limit": args.limit,
        "bucket_size": 256,
        "bits": [4, 8, 16],
        "target_size_mb": target,
        "gamma": args.gamma,
        "cpus_per_trial": 1,
        "checkpoint": str(ckpt),
    }
    storage = Path(tempfile.mkdtemp(prefix="nasq-bench-bitpolicy-"))
    settings = runner.SearchSettings(
        experiment="quant-policy",
        experiment_config=cfg,
        searcher="tournament",
        population_size=args.population,
        sample_size=args.sample_size,
        samples=args.samples,
        concurrency=2,
        seed=args.seed,
        storage=str(storage),
        name="search",
    )
    t1 = time.perf_counter()
    run_dir = runner.run_search(settings, verbose=0)
    search_s = time.perf_counter() - t1
    from nasq.report import load_trials

    trials = load_trials(run_dir).dropna(subset=["objective"])
    best = trials.sort_values("objective", ascending=False).iloc[0]
    found = policy_row("found (tournament)", net, [int(b) for b in best["genome"].split("-")], splits)
    rows = base + [found]
    summary = {
        "size_vs_uniform8_huffman": found["size_mb"] / u8["size_mb"],
        "size_vs_uniform8_fixed": found["size_mb_fixed"] / u8["size_mb_fixed"],
        "test_acc_diff_vs_uniform8": found["test_acc"] - u8["test_acc"],
        "val_acc_diff_vs_uniform8": found["val_acc"] - u8["val_acc"],
        "test_acc_diff_vs_uniform4": found["test_acc"] - u4["test_acc"],
        "trials_finished": int(len(trials)),
        "train_seconds": train_s,
        "search_seconds": search_s,
        "total_seconds": time.perf_counter() - t0,
        "target_size_mb": target,
    }
    n = len(quantizable_layers(net))
    vectors = {name: correct_vector(net, bits, splits.test) for name, bits in (
        ("found", [int(b) for b in best["genome"].split("-")]), ("float", [32] * n), ("uniform 8-bit", [8] * n),
        ("uniform 4-bit", [4] * n))}
    intervals = {other: paired_interval(vectors["found"], vectors[other], args.bootstrap, args.seed)
                 for other in ("float", "uniform 8-bit", "uniform 4-bit")}
    summary["test_diff_intervals"] = {k: {"diff": v[0], "lo95": v[1], "hi95": v[2]} for k, v in intervals.items()}
    summary["test_images"] = len(splits.test)
    summary["meets_targets"] = bool(
        summary["size_vs_uniform8_huffman"] <= 0.63
        and summary["test_acc_diff_vs_uniform8"] >= -0.2
        and summary["test_acc_diff_vs_uniform4"] > 0
    )
    title = (
        f"{args.model} on CIFAR-10 subset ({len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test ({'the separate CIFAR-10 test subset' if args.test_data != 'none' else 'held out'}), "
        f"{args.epochs:g} float epochs on CPU)"
    )
    stem = "bit_policy" if args.model == "resnet18" else f"bit_policy_{args.model}"
    write_policy_report(rows, RESULTS, stem=stem, title=title)
    note = [
        f"\nMachine: {machine_note()}",
        f"Search: tournament P={args.population} S={args.sample_size}, "
        f"{args.samples} trials, TS={target:.3f} MB ({args.target_fraction}x uniform 8-bit), "
        f"gamma={args.gamma}; "
        "chosen by validation fitness, reported on test.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| size vs uniform 8-bit (Huffman file) | {summary['size_vs_uniform8_huffman']:.3f}x | <= 0.63x |",
        f"| size vs uniform 8-bit (fixed bits) | {summary['size_vs_uniform8_fixed']:.3f}x | |",
        f"| test acc diff vs uniform 8-bit | {summary['test_acc_diff_vs_uniform8']:+.2f} pts | >= -0.2 |",
        f"| val acc diff vs uniform 8-bit | {summary['val_acc_diff_vs_uniform8']:+.2f} pts | |",
        f"| test acc diff vs uniform 4-bit | {summary['test_acc_diff_vs_uniform4']:+.2f} pts | > 0 |",
        *[f"| test acc diff vs {k}, paired bootstrap 95 % interval ({args.bootstrap} resamples of "
          f"{len(splits.test)} images) | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] pts | |" for k, (d, lo, hi) in
          intervals.items()],
        f"| wall time: train / search / total | {train_s:.0f} s / {search_s:.0f} s / "
        f"{summary['total_seconds']:.0f} s | ~600 s |",
    ]
    md = markdown_table(rows, title) + "\n".join(note) + "\n"
    (RESULTS / f"{stem}.md").write_text(md)
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    trials.to_csv(RESULTS / f"{stem}_trials.csv", index=False)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
