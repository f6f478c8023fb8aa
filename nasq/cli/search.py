"""``nasq search TARGET ...``: start a search; each target has its own module."""

from __future__ import annotations

import argparse
import importlib

# target name -> module defining ``register(subparsers)`` for it
TARGETS: dict[str, str] = {
    "nb201": "nasq.cli.search_nb201",
    "jasq": "nasq.cli.search_jasq",
    "quant-policy": "nasq.cli.search_quant_policy",
    "spaceevo": "nasq.cli.search_spaceevo",
    "subnet": "nasq.cli.search_subnet",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` verb and its targets."""
    parser = sub.add_parser("search", help="run a search on Ray Tune")
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    for module in TARGETS.values():
        importlib.import_module(module).register(targets)
