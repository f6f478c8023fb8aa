"""``nasq demo``: a small JASQ search on the embedded digits data, printing the Pareto front.

Sized to finish in a few minutes on 2 cores: N=1, F=8, B=3, 24 trials of 40 shared-weight
steps each, population 8, tournament sample 3, Eq. 1 target 0.02 MB.
"""

from __future__ import annotations

import argparse

from nasq.cli.search_jasq import run_jasq
from nasq.runner import SearchSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = sub.add_parser("demo", help="small JASQ search on digits (a few minutes on 2 cores)")
    parser.add_argument("--samples", type=int, default=24, help="number of trials")
    parser.add_argument("--population", type=int, default=8, help="population size P")
    parser.add_argument("--sample-size", type=int, default=3, help="tournament sample size S")
    parser.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    parser.add_argument("--train-steps", type=int, default=40, help="SGD steps per trial")
    parser.add_argument("--target-size-mb", type=float, default=0.02, help="Eq. 1 target size TS")
    parser.add_argument("--seed", type=int, default=0, help="searcher and data seed")
    parser.add_argument("--storage", default="runs", help="parent folder of the run directory")
    parser.add_argument("--name", default=None, help="run directory name")
    parser.set_defaults(func=_run)


def demo_settings(args: argparse.Namespace) -> SearchSettings:
    """The demo's search settings (JASQ tournament search on digits)."""
    cfg = {"dataset": "digits", "cells": 1, "channels": 8, "combinations": 3, "bits": [4, 8, 16],
           "train_steps": args.train_steps, "batch_size": 64, "lr": 0.05,
           "target_size_mb": args.target_size_mb, "gamma": -0.2, "seed": args.seed}
    return SearchSettings(experiment="jasq", experiment_config=cfg, searcher="tournament",
                          population_size=args.population, sample_size=args.sample_size, samples=args.samples,
                          concurrency=args.concurrency, seed=args.seed, storage=args.storage, name=args.name)


def _run(args: argparse.Namespace) -> int:
    return run_jasq(demo_settings(args))
