"""``nasq demo``: a small JASQ search on the embedded digits data, printing the Pareto front.

Sized to finish in a few minutes on 2 cores: N=1, F=8, B=3, 24 trials of 40 shared-weight
steps each, population 8, tournament sample 3, Eq. 1 target 0.02 MB.
"""

from __future__ import annotations

import argparse

from nasq.cli.search_common import add_config_argument, add_experiment_arguments, add_search_arguments, \
    resolve_settings
from nasq.settings import JasqSettings, SearchSettings

SEARCH_DEFAULTS = {"searcher": "tournament", "population_size": 8, "sample_size": 3, "samples": 24,
                   "concurrency": 2, "seed": 0}
JASQ_DEFAULTS = {"dataset": "digits", "cells": 1, "channels": 8, "combinations": 3, "bits": (4, 8, 16),
                 "train_steps": 40, "batch_size": 64, "lr": 0.05, "target_size_mb": 0.02, "gamma": -0.2,
                 "train_seed": 0}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = sub.add_parser("demo", help="small JASQ search on digits (a few minutes on 2 cores)")
    add_config_argument(parser)
    add_experiment_arguments(parser, JasqSettings, JASQ_DEFAULTS, only=("train_steps", "target_size_mb"))
    add_search_arguments(parser, population=8, sample=3, samples=24,
                         only=("population_size", "sample_size", "samples", "concurrency", "seed", "storage",
                               "name"))
    parser.set_defaults(func=_run)


def demo_settings(args: argparse.Namespace) -> SearchSettings:
    """The demo's search settings (JASQ tournament search on digits; --config and flags override)."""
    return resolve_settings(args, "jasq", JasqSettings, SEARCH_DEFAULTS, JASQ_DEFAULTS)


def _run(args: argparse.Namespace) -> int:
    from nasq.cli.search_jasq import run_jasq

    return run_jasq(demo_settings(args))
