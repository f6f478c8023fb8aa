"""Entry point of the ``nasq`` command: assembles the verbs and maps errors to one line.

Each verb lives in its own module exposing ``register(subparsers)``, which adds a
sub-parser whose ``func`` default takes the parsed ``argparse.Namespace`` and returns
an exit code. Set ``NASQ_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from nasq.errors import NasqError

# Verb modules, in the order ``nasq --help`` lists them.
VERBS: tuple[str, ...] = ("demo", "search", "submit", "resume", "report", "train", "export", "latency", "lut",
                         "supernet", "pipeline")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every verb's sub-parser."""
    parser = argparse.ArgumentParser(prog="nasq", description="Joint architecture and quantization search "
                                     "on Ray Tune (JASQ, SpaceEvo).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"nasq.cli.{verb}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and exit with status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["export", "int8"]:  # real INT8 files of a supernet's subnets: their own options
        from nasq.cli.export_int8 import run

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return _guarded(lambda: run(argv[2:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return _guarded(lambda: args.func(args))


def _guarded(call) -> int:
    """Run a verb; a NasqError is one ``nasq: error:`` line (a traceback with ``NASQ_DEBUG=1``)."""
    debug = os.environ.get("NASQ_DEBUG", "") not in ("", "0")
    try:
        return int(call() or 0)
    except NasqError as exc:
        if debug:
            raise
        print(f"nasq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nasq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
