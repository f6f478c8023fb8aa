"""Options and launch steps shared by every ``nasq search`` target."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from nasq import runner


def add_search_arguments(parser: argparse.ArgumentParser, population: int = 16, sample: int = 16,
                         samples: int = 64) -> None:
    """Add the options every search target shares (searcher, P, S, samples, Ray, storage)."""
    parser.add_argument("--searcher", default="tournament", help="tournament | aging | random")
    parser.add_argument("--population", type=int, default=population, help="population size P")
    parser.add_argument("--sample-size", type=int, default=sample, help="tournament sample size S")
    parser.add_argument("--children-per-parent", type=int, default=1,
                        help="aging only: 2 gives each parent one child per mutation kind (SpaceEvo)")
    parser.add_argument("--samples", type=int, default=samples, help="number of trials")
    parser.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    parser.add_argument("--seed", type=int, default=0, help="searcher seed")
    parser.add_argument("--points", action="append", default=[], metavar="GENOME",
                        help="a genome to evaluate first (repeatable)")
    parser.add_argument("--storage", default="runs", help="parent folder of run directories")
    parser.add_argument("--name", default=None, help="run directory name (default: experiment-searcher-time)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: start a local Ray)")


def settings_from_args(args: argparse.Namespace, experiment: str, cfg: dict) -> runner.SearchSettings:
    """Build :class:`nasq.runner.SearchSettings` from the shared options."""
    return runner.SearchSettings(
        experiment=experiment, experiment_config=cfg, searcher=args.searcher,
        population_size=args.population, sample_size=args.sample_size,
        children_per_parent=args.children_per_parent, samples=args.samples, concurrency=args.concurrency,
        seed=args.seed, storage=args.storage, name=args.name, address=args.address,
        points_to_evaluate=list(args.points))


def launch(settings: runner.SearchSettings,
           configure: Callable[[runner.SearchSettings, Path], None] | None = None) -> Path:
    """Validate, let the target finish its config, start or join Ray, print where to look, search.

    ``configure(settings, run_dir)`` runs after validation (the run name is known) and before Ray
    starts; it may add entries to ``settings.experiment_config``.

    Returns:
        The run directory.
    """
    settings = runner.check_settings(settings)
    run_dir = runner.run_dir_of(settings)
    if configure is not None:
        configure(settings, run_dir)
    url = runner.connect_ray(settings.address)
    print(f"nasq: Ray dashboard: {url or '(not running)'}", flush=True)
    print(f"nasq: run directory: {run_dir}", flush=True)
    return runner.run_search(settings)
