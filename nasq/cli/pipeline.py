"""``nasq pipeline spaceevo``: predictor, accuracy table, space search, supernet, subnet search in one
resumable run directory (SpaceEvo §4 and §5; :mod:`nasq.pipeline`).

It takes every flag of the whole-chain ``nasq search spaceevo --data …`` (predictor, ``--lut-*`` and search
flags) plus the ``--supernet-*`` and ``--subnet-*`` fields of :class:`nasq.settings.PipelineSettings`. All of
it is checked before Ray starts; ``nasq resume RUN_DIR`` continues at the first unfinished phase.
"""

from __future__ import annotations

import argparse

from nasq.settings import PipelineSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pipeline`` verb and its ``spaceevo`` target."""
    from nasq.cli.search_common import add_experiment_arguments, add_search_target
    from nasq.cli.search_spaceevo import SEARCH_DEFAULTS
    from nasq.settings import SpaceEvoSettings

    parser = sub.add_parser("pipeline", help="the whole SpaceEvo pipeline, resumable (§4 and §5)")
    targets = parser.add_subparsers(dest="pipeline_target", metavar="TARGET")
    targets.required = True
    p = add_search_target(targets, "spaceevo", "predictor -> table -> space search -> supernet -> subnets",
                          SpaceEvoSettings, SEARCH_DEFAULTS, aliases={"dataset": ("--data",)})
    add_experiment_arguments(p, PipelineSettings)
    p.set_defaults(func=_run)


def pipeline_settings(args: argparse.Namespace) -> PipelineSettings:
    """The ``--supernet-*`` / ``--subnet-*`` settings given (defaults for the rest)."""
    from nasq.cli.search_common import parse_value

    given = vars(args)
    return PipelineSettings.from_dict({f: parse_value(PipelineSettings, f, given[f])
                                       for f in PipelineSettings.__dataclass_fields__ if f in given})


def _run(args: argparse.Namespace) -> int:
    from nasq.cli.search_spaceevo import _show, spaceevo_settings
    from nasq.errors import ConfigError
    from nasq.pipeline import run_pipeline

    pipe = pipeline_settings(args)
    settings = spaceevo_settings(args)
    if not settings.options.is_chain:
        raise ConfigError("nasq pipeline spaceevo builds its own table and predictor: pass --data "
                          "digits|cifar10|npz:PATH, not --lut/--predictor")
    if not settings.options.constraints_ms:
        raise ConfigError("--constraints-ms is required: INT8 latency limits in ms like 5,10")
    run_dir = run_pipeline(settings, pipe, on_connect=_show, echo=lambda line: print(line, flush=True))
    print(f"nasq: pipeline done; subnets per limit: {run_dir / 'subnets' / 'subnets.csv'}", flush=True)
    return 0
