"""``nasq lut build``: the block-wise KD accuracy table (SpaceEvo §4.5) on Ray, resumable.

``nasq lut build --data digits|cifar10|npz:PATH [--teacher-checkpoint F] [--hyperspace spaceevo-tiny]
--out DIR`` trains one elastic stage per (stage, block type) as a Ray task and writes ``DIR/lut.csv`` +
``DIR/lut.json``. Rerunning the same command on the same ``DIR`` resumes: finished parts are skipped.
Flags are the fields of :class:`nasq.settings.LutSettings`; bad values fail as one line before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nasq.errors import ConfigError
from nasq.settings import LutSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lut`` verb and its ``build`` command."""
    from nasq.cli.search_common import add_config_argument, add_experiment_arguments

    parser = sub.add_parser("lut", help="build the block-wise KD accuracy table (SpaceEvo §4.5)")
    cmds = parser.add_subparsers(dest="lut_cmd", metavar="CMD")
    cmds.required = True
    b = cmds.add_parser("build", help="train every (stage, block type) on Ray; write lut.csv + lut.json")
    add_config_argument(b)
    add_experiment_arguments(b, LutSettings, aliases={"dataset": ("--data",)})
    b.add_argument("--out", required=True, metavar="DIR", help="LUT folder (rerun on it to resume)")
    b.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    b.set_defaults(func=_build)


def resolve(args: argparse.Namespace) -> LutSettings:
    """Settings from ``--config`` (a mapping of LutSettings fields) then the flags given."""
    from nasq.cli.search_common import parse_value
    from nasq.settings import load_config

    given, options = vars(args), {}
    if given.get("config"):
        options.update(load_config(given["config"]))
    for f in dataclasses.fields(LutSettings):
        if f.name in given:
            options[f.name] = parse_value(LutSettings, f.name, given[f.name])
    return LutSettings.from_dict(options, "settings")


def _build(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for lut.csv and lut.json")
    settings = resolve(args).check()
    from nasq.bkd.build import build_lut
    from nasq.runner import connect_ray

    connect_ray(args.address)
    report = build_lut(settings, out)
    print(f"nasq: trained {len(report.trained)} (stage, type) parts, skipped {len(report.skipped)} done ones",
          flush=True)
    for name, sec in report.seconds.items():
        print(f"  {name:28s} {sec:8.1f} s")
    print(f"nasq: table {report.out / 'lut.csv'}, metadata {report.out / 'lut.json'}", flush=True)
    return 0
