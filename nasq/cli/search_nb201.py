"""``nasq search nb201``: evolutionary search on the NAS-Bench-201 table through Ray Tune."""

from __future__ import annotations

import argparse
from pathlib import Path

from nasq.cli.report import print_summary
from nasq.cli.search_common import add_search_arguments, launch, settings_from_args
from nasq.errors import DataError
from nasq.nb201_table import DATASET_COLUMNS, default_table_path


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
    print_summary(launch(settings_from_args(args, "nb201", cfg)))
    return 0
