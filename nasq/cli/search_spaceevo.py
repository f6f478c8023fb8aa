"""``nasq search spaceevo``: search a quantization-friendly search space (SpaceEvo §4.2, §4.4).

Aging evolution with two children per parent (one ``block`` and one ``width`` mutation) over the candidate
spaces of a hyperspace; each trial scores one space with the Q-T score through the accuracy table
(``--lut DIR`` of ``nasq lut build``) and the INT8 latency predictor (``--predictor FILE``) actors. The
initial population starts with every homogeneous space. After the search (and after ``nasq resume`` /
``nasq report``) the run directory holds the Q-T curve, the best spaces and the final population's
per-stage block-type histogram (``spaceevo_*.csv`` / ``.png``).

Without ``--lut``/``--predictor``, ``--data digits|cifar10|npz:PATH`` runs the whole chain of SpaceEvo §4 in
one run directory (:mod:`nasq.spaceevo_chain`): the INT8 latency predictor of the hyperspace
(``--predictor-*`` counts), the accuracy table (``--lut-*`` training fields), then the search; each phase
is recorded in ``RUN_DIR/chain.json`` and ``nasq resume RUN_DIR`` continues at the first unfinished one.
``--stop-after predictor|lut`` ends the run after that phase.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasq.cli.search_common import add_search_target, launch, resolve_settings
from nasq.errors import ConfigError
from nasq.settings import SearchSettings, SpaceEvoSettings

SEARCH_DEFAULTS = {"population_size": 500, "sample_size": 125, "samples": 5000, "searcher": "aging",
                   "children_per_parent": 2}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``spaceevo`` search target (SpaceEvo §4.4)."""
    p = add_search_target(sub, "spaceevo", "search a quantization-friendly search space (Q-T score)",
                          SpaceEvoSettings, SEARCH_DEFAULTS, aliases={"dataset": ("--data",)})
    p.add_argument("--stop-after", default=None, metavar="PHASE",
                   help="whole chain only: stop after this phase, predictor | lut (`nasq resume DIR` "
                   "continues)")
    p.set_defaults(func=_run)


def spaceevo_settings(args: argparse.Namespace) -> SearchSettings:
    """The resolved settings of ``nasq search spaceevo`` (§4.4; defaults < --config < flags)."""
    return resolve_settings(args, "spaceevo", SpaceEvoSettings, SEARCH_DEFAULTS)


def _show(url: str | None, run_dir: Path) -> None:
    """Print where to look once Ray is up (the whole chain's counterpart of ``launch``'s lines)."""
    from nasq.cli.submit import dashboard_help

    print(f"nasq: Ray dashboard: {url or '(not running)'}", flush=True)
    hint = dashboard_help(url)
    if hint:
        print(hint, flush=True)
    print(f"nasq: run directory: {run_dir}", flush=True)


def _run(args: argparse.Namespace) -> int:
    settings = spaceevo_settings(args)
    if settings.options.is_chain:
        from nasq.spaceevo_chain import run_chain

        run_dir = run_chain(settings, stop_after=args.stop_after, on_connect=_show,
                            echo=lambda line: print(line, flush=True))
    else:
        if args.stop_after is not None:
            raise ConfigError("--stop-after is for the whole chain (--data without --lut/--predictor); "
                              "drop it")
        run_dir = Path(launch(settings))
    return print_result(run_dir)


def print_result(run_dir: Path) -> int:
    """Print the summary and the best space of a finished search (§4.4); 1 when none is there yet."""
    from nasq.cli.report import print_summary
    from nasq.spaceevo_chain import is_chain_run, phase_entry, read_chain
    from nasq.spaceevo_report import BEST_JSON, CURVE_PNG, HIST_PNG

    if is_chain_run(run_dir) and not phase_entry(read_chain(run_dir), "search")["done"]:
        return 0  # stopped after an earlier phase (--stop-after): nothing searched yet
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
