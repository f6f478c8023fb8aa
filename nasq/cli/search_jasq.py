"""``nasq search jasq``: joint architecture + bit-policy search with a weight-shared population (JASQ)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasq import runner
from nasq.cli.report import print_summary
from nasq.cli.search_common import add_search_arguments, launch, settings_from_args
from nasq.data import resolve_spec
from nasq.errors import ConfigError
from nasq.fitness import check_target
from nasq.jasq_report import BEST_JSON, PARETO_CSV, PARETO_PNG
from nasq.param_store import store_actor_name


def add_jasq_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the JASQ experiment (data, skeleton, training, Eq. 1)."""
    parser.add_argument("--dataset", default="digits", help="digits | cifar10 | npz:PATH")
    parser.add_argument("--data-root", default=None, help="torchvision CIFAR-10 folder (cifar10 only)")
    parser.add_argument("--data-limit", type=int, default=None, help="use at most this many examples")
    parser.add_argument("--target-size-mb", type=float, default=None,
                        help="target size TS of Eq. 1 (default: none, fitness = validation accuracy)")
    parser.add_argument("--gamma", type=float, default=-0.2, help="Eq. 1 exponent over the target size")
    parser.add_argument("--cells", type=int, default=1, help="N, normal cells per stage (3N+2 cells)")
    parser.add_argument("--channels", type=int, default=8, help="F, channels of the first stage")
    parser.add_argument("--combinations", type=int, default=5, help="B, combinations per cell")
    parser.add_argument("--bits", default="4,8,16", help="bit width choices of a cell")
    parser.add_argument("--train-steps", type=int, default=50, help="SGD steps per trial on shared weights")
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")


def jasq_config(args: argparse.Namespace) -> dict:
    """The experiment config of ``nasq search jasq`` options (validated)."""
    if args.target_size_mb is not None:
        check_target(args.target_size_mb, args.gamma)
    try:
        bits = [int(b) for b in str(args.bits).split(",")]
    except ValueError as exc:
        raise ConfigError(f"--bits {args.bits!r} must be comma-separated integers, like 4,8,16") from exc
    for key in ("cells", "channels", "combinations", "train_steps", "batch_size"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    dataset, data_root = resolve_spec(args.dataset, args.data_root)
    return {"dataset": dataset, "data_root": data_root, "data_limit": args.data_limit,
            "target_size_mb": args.target_size_mb, "gamma": args.gamma, "cells": args.cells,
            "channels": args.channels, "combinations": args.combinations, "bits": bits,
            "train_steps": args.train_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}


def run_jasq(settings: runner.SearchSettings) -> int:
    """Run the search, then write and print the Pareto front and best genomes."""
    def name_store(resolved: runner.SearchSettings, run_dir: Path) -> None:
        """Name the run's parameter-store actor after the run (JASQ Appendix 4)."""
        resolved.experiment_config["param_store"] = store_actor_name(resolved.name)

    run_dir = launch(settings, name_store)
    print_summary(run_dir)
    print_front(run_dir)
    return 0


def print_front(run_dir: Path) -> None:
    """Print the Pareto front and best genomes the run's finish hook wrote."""
    doc = json.loads((Path(run_dir) / BEST_JSON).read_text())
    front, best = doc["pareto"], doc["best"]
    print(f"nasq: Pareto front (validation accuracy vs Huffman-coded size), {len(front)} points: "
          f"{run_dir / PARETO_CSV}, {run_dir / PARETO_PNG}")
    for row in front:
        print(f"  val_acc={row['val_acc']:.2f}%  size_mb={row['size_mb']:.4f}  "
              f"fitness={row.get('fitness', float('nan')):.4f}  {row['genome']}")
    if best:
        print(f"nasq: train the best from scratch: nasq train {run_dir} --genome '{best[0]['genome']}'")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``jasq`` search target."""
    parser = sub.add_parser("jasq", help="joint architecture and quantization search (JASQ)")
    add_jasq_arguments(parser)
    add_search_arguments(parser, population=16, sample=4, samples=64)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return run_jasq(settings_from_args(args, "jasq", jasq_config(args)))
