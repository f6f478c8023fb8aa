"""``nasq search subnet RUN_DIR --predictor FILE --constraints-ms T1,T2,…``: the best INT8 subnets of a
trained supernet under predicted INT8 latency limits (SpaceEvo §5), through Ray Tune and nasq's searchers.

One search per limit, each in ``STORAGE/NAME/limit-<T>ms/`` (a normal run directory: ``nasq resume`` and
``nasq report`` work on it): every search keeps its whole population inside its own limit (the evolution
core's hard constraint), so no evaluation is spent on a subnet that only a looser limit admits, and each
limit's search is resumable and inspectable alone. After all limits, ``STORAGE/NAME/subnets.csv`` holds
one row per limit: the best subnet, its predicted latency, validation and test INT8 accuracy.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

from nasq.cli.search_common import (add_config_argument, add_experiment_arguments, add_search_arguments,
                                    launch, resolve_settings)
from nasq.errors import ConfigError
from nasq.settings import SearchSettings, SubnetSearchSettings, _floats

SEARCH_DEFAULTS = {"population_size": 20, "sample_size": 5, "samples": 100, "searcher": "aging"}
SUMMARY_CSV = "subnets.csv"
_FLAGS = ("predictor", "constraint_draws", "bn_batches", "device", "cpus_per_trial")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``subnet`` search target (SpaceEvo §5)."""
    p = sub.add_parser("subnet", help="latency-constrained search of a trained supernet's INT8 subnets")
    p.add_argument("supernet", metavar="RUN_DIR", help="run directory of `nasq supernet train`")
    p.add_argument("--constraints-ms", required=True, metavar="T1,T2,…",
                   help="predicted INT8 latency limits in ms; one search per limit")
    add_config_argument(p)
    add_experiment_arguments(p, SubnetSearchSettings, only=_FLAGS)
    add_search_arguments(p, population=SEARCH_DEFAULTS["population_size"], sample=SEARCH_DEFAULTS["sample_size"],
                         samples=SEARCH_DEFAULTS["samples"], extra_defaults=SEARCH_DEFAULTS)
    p.set_defaults(func=_run)


def limit_settings(args: argparse.Namespace) -> list[SearchSettings]:
    """One checked search per limit (§5), all before Ray starts; run folders ``NAME/limit-<T>ms``."""
    limits = _floats("constraints_ms", args.constraints_ms)
    if any(t <= 0 for t in limits):
        raise ConfigError(f"--constraints-ms must be positive latencies in ms, got {args.constraints_ms!r}")
    args.supernet = str(Path(args.supernet).expanduser().resolve())
    base = resolve_settings(args, "subnet", SubnetSearchSettings, SEARCH_DEFAULTS,
                            {"supernet": args.supernet, "max_latency_ms": limits[0]})
    parent = Path(base.storage).expanduser().resolve() / (base.name or time.strftime("subnets-%Y%m%d-%H%M%S"))
    out = []
    for t in limits:
        opts = dataclasses.replace(base.options, max_latency_ms=t).check()
        out.append(base.replace(experiment_config=opts, storage=str(parent), name=f"limit-{t:g}ms"))
    return out


def _run(args: argparse.Namespace) -> int:
    searches = limit_settings(args)
    parent = Path(searches[0].storage)
    rows = []
    for settings in searches:
        run_dir = launch(settings)
        best = run_dir / "subnet_best.json"
        doc = json.loads(best.read_text()) if best.is_file() else {"max_latency_ms":
                                                                   settings.options.max_latency_ms}
        rows.append({"run_dir": str(run_dir), **doc})
        print(f"nasq: limit {doc['max_latency_ms']:g} ms: " + (
            f"{doc['genome']} predicted {doc['latency_ms']:.3f} ms, INT8 val {100 * doc['val_acc_int8']:.2f}%, "
            f"test {100 * doc['test_acc_int8']:.2f}%" if "genome" in doc else "no trial finished"), flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(parent / SUMMARY_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"nasq: summary {parent / SUMMARY_CSV}; fronts: {parent}/limit-*/pareto.png", flush=True)
    return 0
