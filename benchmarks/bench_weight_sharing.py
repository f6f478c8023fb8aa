"""Weight-sharing fidelity (JASQ Appendix 4): do shared weights rank genomes like stand-alone training?

Procedure (no Ray: the plain :class:`nasq.param_store.ParameterStore`, one trial after another,
which is the search's own pull / train / push cycle at concurrency 1):

1. Warm-up: ``--warmup`` random genomes each train the shared supernet ``--steps`` SGD steps
   (pushing their deltas), as the first generation of a JASQ search does.
2. ``--genomes`` fresh random genomes are each evaluated three ways on the validation split,
   all quantized with the genome's bit policy (JASQ §3.4):
   shared (the pulled shared weights, as they are), shared+T (the trial's procedure: T more
   steps on a copy of the shared weights, not pushed) and stand-alone (a fresh network trained
   from scratch ``--epochs`` epochs, BN with running statistics).
3. Kendall tau between the weight-shared and stand-alone accuracies (scipy), and also with
   stand-alone test accuracy.

    .venv/bin/python benchmarks/bench_weight_sharing.py [--genomes 24 --warmup 64 --steps 30 --epochs 4]
    .venv/bin/python benchmarks/bench_weight_sharing.py \
        --dataset npz:../shared/data/cifar10/cifar10_train_20000.npz --limit 3000 --channels 4 \
        --combinations 3 --warmup 32 --steps 20 --epochs 2 --genomes 20 --name weight_sharing_cifar10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_note, write_results  # noqa: E402

from nasq.data import load_dataset  # noqa: E402
from nasq.models.nasnet import NetConfig, SharedNasNet, build_network, parameter_keys  # noqa: E402
from nasq.models.training import (TrainSettings, epochs_to_steps, evaluate, quantize_network,  # noqa: E402
                                  train_standalone, train_steps)
from nasq.param_store import ParameterStore  # noqa: E402
from nasq.spaces.jasq import JasqSpace  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", help="digits | cifar10 | npz:PATH")
    p.add_argument("--limit", type=int, default=None, help="use at most this many examples")
    p.add_argument("--name", default="weight_sharing", help="results file name")
    p.add_argument("--genomes", type=int, default=24, help="genomes ranked (>= 20)")
    p.add_argument("--warmup", type=int, default=64, help="random genomes training the supernet first")
    p.add_argument("--steps", type=int, default=30, help="SGD steps per weight-shared trial")
    p.add_argument("--epochs", type=float, default=4.0, help="stand-alone training epochs")
    p.add_argument("--cells", type=int, default=1)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--combinations", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def shared_trial(store: ParameterStore, genome, cfg: NetConfig, data, steps: int, seed: int, push: bool):
    """One weight-shared trial: pull, train ``steps``, optionally push; return the trained network."""
    names = parameter_keys(genome, cfg)
    base = store.pull(names)
    net = build_network(genome, cfg, shared=True)
    net.load_state_dict(base)
    train_steps(net, data, TrainSettings(steps=steps, seed=seed))
    if push and steps > 0:
        trained = net.state_dict()
        store.push({k: trained[k] - base[k] for k in names})
    return net


def quantized_acc(net, genome, cfg, data) -> float:
    """Validation/test accuracy after quantizing with the genome's bits (JASQ §3.4)."""
    quantize_network(net, genome, cfg)
    return evaluate(net, data)


def rank_genomes(args, store, space, cfg, splits, rng) -> list[list]:
    """Per genome: shared, shared+T and stand-alone accuracies (all quantized)."""
    raw = []
    steps = epochs_to_steps(args.epochs, len(splits.train), 64)
    for i in range(args.genomes):
        g = space.random(rng)
        shared = shared_trial(store, g, cfg, splits.train, 0, 0, False)
        trial = shared_trial(store, g, cfg, splits.train, args.steps, 10_000 + i, False)
        t1 = time.perf_counter()
        net = train_standalone(g, cfg, splits.train, TrainSettings(steps=steps, seed=i), seed=i)
        alone_s = time.perf_counter() - t1
        quantize_network(net, g, cfg)
        raw.append([space.encode(g), quantized_acc(shared, g, cfg, splits.val),
                    quantized_acc(trial, g, cfg, splits.val), evaluate(net, splits.val),
                    evaluate(net, splits.test), round(alone_s, 2)])
        print(f"{i + 1}/{args.genomes} shared={raw[-1][1]:.3f} shared+T={raw[-1][2]:.3f} "
              f"alone_val={raw[-1][3]:.3f} alone_test={raw[-1][4]:.3f}", flush=True)
    return raw


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    splits = load_dataset(args.dataset, seed=args.seed, limit=args.limit)
    cfg = NetConfig(splits.num_classes, tuple(splits.input_shape), args.channels, args.cells,
                    args.combinations)
    space = JasqSpace(args.combinations, args.cells)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    store = ParameterStore(SharedNasNet(cfg).state_dict())
    t0 = time.perf_counter()
    for i in range(args.warmup):
        shared_trial(store, space.random(rng), cfg, splits.train, args.steps, args.seed + i, push=True)
    warm_s = time.perf_counter() - t0
    raw = rank_genomes(args, store, space, cfg, splits, rng)
    cols = list(zip(*raw))
    rows = []
    for name, idx in (("shared (no extra steps)", 1), (f"shared + {args.steps} steps (trial)", 2)):
        tau_val, p_val = kendalltau(cols[idx], cols[3])
        tau_test, p_test = kendalltau(cols[idx], cols[4])
        rows.append([name, len(raw), f"{tau_val:.3f}", f"{p_val:.2g}", f"{tau_test:.3f}", f"{p_test:.2g}",
                     f"{np.mean(cols[idx]):.3f}"])
    steps = epochs_to_steps(args.epochs, len(splits.train), 64)
    notes = [machine_note(),
             f"data {args.dataset} (train {len(splits.train)}, val {len(splits.val)}, "
             f"test {len(splits.test)}); skeleton N={args.cells}, F={args.channels}, B={args.combinations}; "
             f"seed {args.seed}",
             f"warm-up: {args.warmup} random genomes x {args.steps} shared SGD steps ({warm_s:.0f} s)",
             f"stand-alone: {args.epochs:g} epochs from scratch ({steps} steps, batch 64); mean stand-alone "
             f"val acc {np.mean(cols[3]):.3f}, test {np.mean(cols[4]):.3f}",
             "every accuracy is after quantization with the genome's bit policy (bucket 256; "
             "stem/classifier/BN 16-bit)",
             "tau: Kendall tau-b (scipy) of weight-shared val acc vs stand-alone val / test acc "
             "over random genomes"]
    headers = ["weight-shared accuracy", "genomes", "tau vs alone val", "p", "tau vs alone test", "p",
               "mean shared acc"]
    raw_headers = ["genome", "shared_val", "shared_t_val", "alone_val", "alone_test", "alone_seconds"]
    write_results(args.name, "Weight-sharing fidelity: Kendall tau, shared vs stand-alone (JASQ App. 4)",
                  notes, headers, rows, raw=(raw_headers, raw))


if __name__ == "__main__":
    main()
