"""``nasq search nb201``: evolutionary search on the NAS-Bench-201 table through Ray Tune.

The helpers :func:`add_search_arguments`, :func:`settings_from_args` and :func:`run_and_print`
are shared by the other ``nasq search`` targets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nasq import runner
from nasq.cli.report import print_summary
from nasq.errors import DataError
from nasq.nb201_table import DATASET_COLUMNS, default_table_path


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


def run_and_print(settings: runner.SearchSettings) -> int:
    """Validate, start or join Ray, print the dashboard URL and run directory, search, print the best."""
    settings = runner.check_settings(settings)
    url = runner.connect_ray(settings.address)
    print(f"nasq: Ray dashboard: {url or '(not running)'}", flush=True)
    print(f"nasq: run directory: {runner.run_dir_of(settings)}", flush=True)
    run_dir = runner.run_search(settings)
    print_summary(run_dir)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``nb201`` search target."""
    parser = sub.add_parser("nb201", help="search the NAS-Bench-201 cell space on its published table")
    parser.add_argument("--table", default=None,
                        help="NB201 accuracy CSV (default: ../shared/data/nb201/ next to the repository)")
    parser.add_argument("--dataset", default="cifar10", help=" | ".join(DATASET_COLUMNS))
    parser.add_argument("--latency-table", default=None, help="NB201 latency CSV (HELP benchmark)")
    parser.add_argument("--latency-column", default=None, help="device column, e.g. lat_ms_raspi4")
    parser.add_argument("--max-latency-ms", type=float, default=None,
                        help="latency limit: slower cells are failed individuals")
    parser.add_argument("--sim-time", type=float, nargs="?", const=0.5, default=0.0, metavar="SECONDS",
                        help="sleep up to SECONDS per trial, scaled by the cell's cost (default 0.5)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial")
    add_search_arguments(parser, population=20, sample=5, samples=100)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    table = Path(args.table) if args.table else default_table_path()
    if table is None:
        raise DataError("no NB201 table found at ../shared/data/nb201/; pass --table PATH")
    cfg: dict = {"table": str(table.expanduser().resolve()), "dataset": args.dataset,
                 "cpus_per_trial": args.cpus_per_trial}
    if args.latency_table or args.latency_column:
        path = Path(args.latency_table).expanduser().resolve() if args.latency_table else None
        cfg["latency_table"] = str(path) if path else None
        cfg["latency_column"] = args.latency_column
    if args.max_latency_ms is not None:
        cfg["max_latency_ms"] = args.max_latency_ms
    if args.sim_time:
        cfg["sim_seconds"] = args.sim_time
    return run_and_print(settings_from_args(args, "nb201", cfg))
