"""``nasq search spaceevo``: search a quantization-friendly search space (SpaceEvo §4.2, §4.4).

Aging evolution with two children per parent (one ``block`` and one ``width`` mutation) over the candidate
spaces of a hyperspace; each trial scores one space with the Q-T score through the accuracy table
(``--lut DIR`` of ``nasq lut build``) and the INT8 latency predictor (``--predictor FILE``) actors. The
initial population starts with every homogeneous space. After the search (and after ``nasq resume`` /
``nasq report``) the run directory holds the Q-T curve, the best spaces and the final population's
per-stage block-type histogram (``spaceevo_*.csv`` / ``.png``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasq.cli.search_common import add_search_target, launch, resolve_settings
from nasq.settings import SearchSettings, SpaceEvoSettings

SEARCH_DEFAULTS = {"population_size": 500, "sample_size": 125, "samples": 5000, "searcher": "aging",
                   "children_per_parent": 2}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``spaceevo`` search target (SpaceEvo §4.4)."""
    p = add_search_target(sub, "spaceevo", "search a quantization-friendly search space (Q-T score)",
                          SpaceEvoSettings, SEARCH_DEFAULTS)
    p.set_defaults(func=_run)


def spaceevo_settings(args: argparse.Namespace) -> SearchSettings:
    """The resolved settings of ``nasq search spaceevo`` (§4.4; defaults < --config < flags)."""
    return resolve_settings(args, "spaceevo", SpaceEvoSettings, SEARCH_DEFAULTS)


def _run(args: argparse.Namespace) -> int:
    from nasq.cli.report import print_summary
    from nasq.spaceevo_report import BEST_JSON, CURVE_PNG, HIST_PNG

    run_dir = Path(launch(spaceevo_settings(args)))
    print_summary(run_dir)
    best = run_dir / BEST_JSON
    if not best.is_file():
        print("nasq: no trial finished; no SpaceEvo report written")
        return 1
    doc = json.loads(best.read_text())
    print(f"nasq: best space: {doc['genome']} (Q-T score {doc['qt_score']:.4g} under "
          f"{','.join(f'{t:g}' for t in doc['limits_ms'])} ms)")
    print(f"nasq: report: {run_dir / CURVE_PNG}, {run_dir / HIST_PNG}, {best}")
    return 0
