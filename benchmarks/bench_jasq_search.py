"""JASQ tournament search vs random search at equal trials on the CIFAR-10 subset (JASQ §4.2).

Both searches run through ``nasq.runner.run_search`` on Ray Tune with the same JASQ experiment
(weight-shared population in a parameter store actor, quantized validation accuracy, Huffman
size, Eq. 1 fitness); each starts from fresh shared weights. Compared per seed: the Pareto
front of (validation accuracy, size) by its hypervolume (reference: accuracy 0 and the largest
size seen in either run), the best fitness, and the best accuracy at or under the target size.

    .venv/bin/python benchmarks/bench_jasq_search.py [--samples 32 --seeds 0 --limit 6000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_note, write_results  # noqa: E402

from nasq import runner  # noqa: E402
from nasq.jasq_report import finished_rows, write_front_outputs  # noqa: E402
from nasq.param_store import store_actor_name  # noqa: E402
from nasq.pareto import pareto_front  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10_train_20000.npz"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA), help="CIFAR-10 subset (.npz)")
    p.add_argument("--limit", type=int, default=6000, help="examples used (train/val/test split of them)")
    p.add_argument("--samples", type=int, default=32, help="trials per search")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--sample-size", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--combinations", type=int, default=5)
    p.add_argument("--target-size-mb", type=float, default=0.03)
    p.add_argument("--seeds", default="0", help="comma-separated searcher seeds")
    p.add_argument("--storage", default=None, help="run directories (default: a temp folder)")
    p.add_argument("--name", default="jasq_search", help="results file name")
    return p.parse_args()


def hypervolume(points: list[tuple[float, float]], size_ref: float) -> float:
    """Area dominated by the (accuracy max, size min) front above accuracy 0 and below ``size_ref``."""
    front = sorted((points[i] for i in pareto_front(points)), key=lambda p: p[1])
    hv, prev_acc = 0.0, 0.0
    for acc, size in front:
        if acc > prev_acc and size < size_ref:
            hv += (acc - prev_acc) * (size_ref - size)
            prev_acc = acc
    return hv


def run_one(args, searcher: str, seed: int, storage: Path) -> tuple[list[dict], float, Path]:
    cfg = {"dataset": f"npz:{args.data}", "data_limit": args.limit, "cells": 1, "channels": args.channels,
           "combinations": args.combinations, "bits": [4, 8, 16], "train_steps": args.train_steps,
           "batch_size": 64, "lr": 0.05, "target_size_mb": args.target_size_mb, "gamma": -0.2, "train_seed": seed}
    name = f"bench-jasq-{searcher}-s{seed}-{int(time.time())}"
    cfg["param_store"] = store_actor_name(name)
    settings = runner.SearchSettings(experiment="jasq", experiment_config=cfg, searcher=searcher,
                                     population_size=args.population, sample_size=args.sample_size,
                                     samples=args.samples, concurrency=2, seed=seed, storage=str(storage),
                                     name=name)
    t0 = time.perf_counter()
    run_dir = runner.run_search(settings, verbose=0)
    seconds = time.perf_counter() - t0
    write_front_outputs(run_dir, None, title="JASQ: validation accuracy vs Huffman size")
    return finished_rows(run_dir), seconds, run_dir


def summarize(results: dict, target: float) -> tuple[list, list]:
    """Table rows (front hypervolume, best fitness, ...) and raw trial rows per (seed, searcher)."""
    rows, raw = [], []
    for (seed, searcher), (trials, seconds, _) in results.items():
        other = results[(seed, "random" if searcher == "tournament" else "tournament")][0]
        size_ref = max(r["size_mb"] for r in trials + other)
        pts = [(r["val_acc"], r["size_mb"]) for r in trials]
        under = [r["val_acc"] for r in trials if r["size_mb"] <= target]
        rows.append([seed, searcher, len(trials), f"{hypervolume(pts, size_ref):.5f}", len(pareto_front(pts)),
                     f"{max(r['fitness'] for r in trials):.4f}", f"{max(under):.4f}" if under else "-",
                     f"{np.median([r['size_mb'] for r in trials]):.4f}", f"{seconds:.0f}"])
        raw += [[seed, searcher, r["genome"], r["val_acc"], r["size_mb"], r["fitness"]] for r in trials]
    return rows, raw


def main() -> None:
    args = parse()
    os.environ.setdefault("NASQ_RAY_DASHBOARD", "0")
    os.environ.setdefault("NASQ_RAY_NUM_CPUS", "2")
    storage = Path(args.storage or tempfile.mkdtemp(prefix="nasq-bench-jasq-"))
    runner.connect_ray(None)
    results = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for searcher in ("tournament", "random"):
            results[(seed, searcher)] = run_one(args, searcher, seed, storage)
            print(f"seed {seed} {searcher}: {len(results[(seed, searcher)][0])} trials in "
                  f"{results[(seed, searcher)][1]:.0f} s", flush=True)
    rows, raw = summarize(results, args.target_size_mb)
    notes = [machine_note(),
             f"data {args.data} (seeded stratified subsample of {args.limit}, split 70/10/20 "
             f"train/val/test); skeleton N=1, F={args.channels}, B={args.combinations}; "
             f"{args.train_steps} shared SGD steps per trial",
             f"{args.samples} trials per search, concurrency 2; tournament P={args.population}, "
             f"S={args.sample_size}; Eq. 1 target {args.target_size_mb} MB, gamma -0.2",
             "hypervolume: area of (val_acc, size_mb) dominated by the front, reference acc 0 and the "
             "largest size of the two runs of that seed; size = Huffman-coded MB",
             f"run directories under {storage}"]
    write_results(args.name, "JASQ tournament vs random search, equal trials (CIFAR-10 subset)", notes,
                  ["seed", "searcher", "trials", "hypervolume", "front points", "best fitness",
                   f"best val_acc <= {args.target_size_mb} MB", "median size_mb", "seconds"], rows,
                  raw=(["seed", "searcher", "genome", "val_acc", "size_mb", "fitness"], raw))


if __name__ == "__main__":
    main()
