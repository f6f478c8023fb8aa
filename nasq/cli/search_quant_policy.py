"""``nasq search quant-policy``: search a per-layer bit policy for a torchvision network (JASQ §4.1).

The float weights come from ``--checkpoint`` (a state dict), from torchvision (``--weights
DEFAULT``, online) or from training on the data set first (``--train-epochs E``); the experiment's
prepare hook gets them once Ray is up. After the search (and after ``nasq resume`` / ``nasq report``)
the run directory gets ``quant_policy_report.{csv,md}`` (found policies beside float and uniform
2/4/8/16-bit, JASQ Table 1's columns) and the Pareto front ``pareto.{csv,png}`` of (val_acc, size_mb).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nasq.cli.search_common import add_search_target, launch, resolve_settings
from nasq.settings import QuantPolicySettings, SearchSettings

SEARCH_DEFAULTS = {"population_size": 16, "sample_size": 4, "samples": 32}
REPORT_MD = "quant_policy_report.md"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``quant-policy`` search target."""
    p = add_search_target(sub, "quant-policy", "search a per-layer bit policy for an existing network",
                          QuantPolicySettings, SEARCH_DEFAULTS, aliases={"bits": ("--bit-choices",)})
    p.set_defaults(func=_run)


def quant_policy_settings(args: argparse.Namespace) -> SearchSettings:
    """The resolved settings of ``nasq search quant-policy`` (defaults < --config < flags)."""
    return resolve_settings(args, "quant-policy", QuantPolicySettings, SEARCH_DEFAULTS)


def _run(args: argparse.Namespace) -> int:
    from nasq.cli.report import print_summary

    run_dir = launch(quant_policy_settings(args))
    print_summary(run_dir)
    report = Path(run_dir) / REPORT_MD
    if not report.is_file():
        print("nasq: no trial finished; no policy report written")
        return 1
    print(report.read_text())
    print(f"nasq: report: {report.with_suffix('.csv')}, {report}; Pareto front: {run_dir / 'pareto.csv'}")
    return 0
