"""``nasq search jasq``: joint architecture + bit-policy search with a weight-shared population (JASQ)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasq.cli.search_common import add_search_target, launch, resolve_settings
from nasq.settings import JasqSettings, SearchSettings

SEARCH_DEFAULTS = {"population_size": 16, "sample_size": 4, "samples": 64}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``jasq`` search target."""
    parser = add_search_target(sub, "jasq", "joint architecture and quantization search (JASQ)", JasqSettings,
                               SEARCH_DEFAULTS)
    parser.set_defaults(func=_run)


def jasq_settings(args: argparse.Namespace) -> SearchSettings:
    """The resolved settings of ``nasq search jasq`` (defaults < --config < flags)."""
    return resolve_settings(args, "jasq", JasqSettings, SEARCH_DEFAULTS)


def run_jasq(settings: SearchSettings) -> int:
    """Run the search, then print the summary, the Pareto front and the best genomes."""
    from nasq.cli.report import print_summary

    run_dir = launch(settings)
    print_summary(run_dir)
    print_front(run_dir)
    return 0


def print_front(run_dir: Path) -> None:
    """Print the Pareto front and best genomes the run's finish hook wrote."""
    from nasq.jasq_report import BEST_JSON, PARETO_CSV, PARETO_PNG

    doc = json.loads((Path(run_dir) / BEST_JSON).read_text())
    front, best = doc["pareto"], doc["best"]
    print(f"nasq: Pareto front (validation accuracy vs Huffman-coded size), {len(front)} points: "
          f"{run_dir / PARETO_CSV}, {run_dir / PARETO_PNG}")
    for row in front:
        print(f"  val_acc={row['val_acc']:.2f}%  size_mb={row['size_mb']:.4f}  "
              f"fitness={row.get('fitness', float('nan')):.4f}  {row['genome']}")
    if best:
        print(f"nasq: train the best from scratch: nasq train {run_dir} --genome '{best[0]['genome']}'")


def _run(args: argparse.Namespace) -> int:
    return run_jasq(jasq_settings(args))
