"""``nasq search nb201``: evolutionary search on the NAS-Bench-201 table through Ray Tune."""

from __future__ import annotations

import argparse

from nasq.cli.search_common import add_search_target, launch, resolve_settings
from nasq.settings import NB201Settings, SearchSettings

SEARCH_DEFAULTS = {"population_size": 20, "sample_size": 5, "samples": 100}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``nb201`` search target."""
    parser = add_search_target(sub, "nb201", "search the NAS-Bench-201 cell space on its published table",
                               NB201Settings, SEARCH_DEFAULTS)
    parser.set_defaults(func=_run)


def nb201_settings(args: argparse.Namespace) -> SearchSettings:
    """The resolved settings of ``nasq search nb201`` (defaults < --config < flags)."""
    return resolve_settings(args, "nb201", NB201Settings, SEARCH_DEFAULTS)


def _run(args: argparse.Namespace) -> int:
    from nasq.cli.report import print_summary

    print_summary(launch(nb201_settings(args)))
    return 0
