"""``nasq supernet train|eval``: the quantized-for-all supernet of a space (SpaceEvo §5) on Ray Train.

``nasq supernet train --space SPACE|--from-search RUN_DIR --data digits|cifar10|npz:PATH [--epochs E
--qat-epochs Q --workers N --batch-size B --lr LR --device auto|cpu|cuda] [--storage DIR --name NAME]
[--address A]`` trains fp32 sandwich-rule epochs then LSQ+ epochs in ``STORAGE/NAME`` (flags are the fields
of :class:`nasq.settings.SupernetSettings`; bad values fail as one line before Ray starts).
``nasq resume RUN_DIR`` continues a killed training at its next epoch, ``nasq report RUN_DIR`` writes its
curves, and ``nasq supernet eval RUN_DIR --subnet S`` measures one subnet with inherited weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from nasq.errors import CheckpointError, ConfigError
from nasq.settings import SupernetSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``supernet`` verb with its ``train`` and ``eval`` commands."""
    from nasq.cli.search_common import add_config_argument, add_experiment_arguments

    parser = sub.add_parser("supernet", help="train / evaluate a quantized-for-all supernet (SpaceEvo §5)")
    cmds = parser.add_subparsers(dest="supernet_cmd", metavar="CMD")
    cmds.required = True
    t = cmds.add_parser("train", help="sandwich-rule fp32 then LSQ+ epochs on Ray Train, checkpoint each epoch")
    add_config_argument(t)
    add_experiment_arguments(t, SupernetSettings, aliases={"dataset": ("--data",)})
    t.add_argument("--from-search", default=None, metavar="RUN_DIR",
                   help="take the best space (and its hyperspace) of a `nasq search spaceevo` run")
    t.add_argument("--storage", default="runs", help="parent folder of run directories (default: runs)")
    t.add_argument("--name", default=None, help="run directory name (default: supernet-DATE-TIME)")
    t.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    t.set_defaults(func=_train)
    e = cmds.add_parser("eval", help="fp32 and INT8 fake-quant test accuracy of one subnet, weights inherited")
    e.add_argument("run_dir", metavar="RUN_DIR", help="run directory of `nasq supernet train`")
    e.add_argument("--subnet", required=True, help="subnet string of the run's space (e.g. from `nasq "
                   "supernet eval RUN_DIR --subnet largest`); largest | smallest also work")
    e.add_argument("--split", default="test", choices=("test", "val"), help="split to measure (default: test)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    e.set_defaults(func=_eval)


def from_search(run_dir: str) -> dict:
    """``space`` and ``hyperspace`` of the best space a finished space search found (§4.4 -> §5)."""
    from nasq.runfile import read_run_file
    from nasq.spaceevo_report import BEST_JSON

    settings = read_run_file(Path(run_dir).expanduser())
    if settings.experiment != "spaceevo":
        raise ConfigError(f"--from-search {run_dir} is a {settings.experiment} run; pass a `nasq search "
                          "spaceevo` run directory")
    best = Path(run_dir).expanduser() / BEST_JSON
    try:
        doc = json.loads(best.read_text())
        return {"space": doc["genome"], "hyperspace": settings.options.hyperspace}
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"--from-search {run_dir} has no readable {BEST_JSON}; run `nasq report "
                              f"{run_dir}` after its search has finished trials") from None


def resolve(args: argparse.Namespace) -> SupernetSettings:
    """Settings from ``--config``, then ``--from-search``, then the flags given (§5)."""
    from nasq.cli.search_common import parse_value
    from nasq.settings import load_config

    given, options = vars(args), {}
    if given.get("config"):
        options.update(load_config(given["config"]))
    if given.get("from_search"):
        if "space" in given:
            raise ConfigError("give --space or --from-search, not both")
        options.update(from_search(given["from_search"]))
    for f in dataclasses.fields(SupernetSettings):
        if f.name in given:
            options[f.name] = parse_value(SupernetSettings, f.name, given[f.name])
    return SupernetSettings.from_dict(options, "settings")


def _train(args: argparse.Namespace) -> int:
    from nasq.cli.submit import dashboard_help
    from nasq.runner import connect_ray
    from nasq.supernet.launch import train_supernet
    from nasq.supernet.run import write_run_file

    settings = resolve(args).check()
    name = args.name or time.strftime("supernet-%Y%m%d-%H%M%S")
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name {name!r} must be a plain folder name (the parent folder is --storage)")
    run_dir = Path(args.storage).expanduser().resolve() / name
    write_run_file(run_dir, settings)  # before Ray: a clash with another run is one line
    url = connect_ray(args.address)
    print(f"nasq: Ray dashboard: {url or '(not running)'}", flush=True)
    hint = dashboard_help(url)
    if hint:
        print(hint, flush=True)
    print(f"nasq: run directory: {run_dir}", flush=True)
    out = train_supernet(settings, str(run_dir.parent), run_dir.name)
    return print_training(run_dir, out)


def print_training(run_dir: Path, out: dict) -> int:
    """Print the last epoch of a training (`nasq supernet train`, `nasq resume`)."""
    m = out["metrics"]
    if not m:
        print("nasq: no epoch finished", flush=True)
        return 1
    done = "all epochs were done already" if out["epochs_run"] == 0 else f"trained {out['epochs_run']} epoch(s)"
    print(f"nasq: {done}; epoch {m['epoch']} ({m['phase']}): validation accuracy "
          f"largest {100 * m['acc_largest']:.2f}%, smallest {100 * m['acc_smallest']:.2f}%", flush=True)
    print(f"nasq: checkpoint {out['checkpoint']}; curves: `nasq report {run_dir}`", flush=True)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from nasq.supernet.run import evaluate_run, read_run_settings

    subnet = args.subnet
    if subnet in ("largest", "smallest"):
        from nasq.spaces.spaceevo import space_from_name

        s = read_run_settings(args.run_dir)
        space = space_from_name(s.hyperspace).candidate(s.space)
        subnet = space.encode(space.largest() if subnet == "largest" else space.smallest())
    r = evaluate_run(args.run_dir, subnet, device=args.device, split=args.split)
    int8 = "not trained yet (no LSQ+ epoch)" if r["int8_acc"] is None else f"{100 * r['int8_acc']:.2f}%"
    print(f"nasq: subnet {r['subnet']}")
    print(f"nasq: {r['split']} accuracy on {r['examples']} images, epoch {r['epoch']} ({r['phase']}): fp32 "
          f"{100 * r['fp32_acc']:.2f}%, INT8 fake-quant {int8}")
    return 0
