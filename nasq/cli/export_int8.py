"""``nasq export int8 RUN_DIR [--subnet S ... | --front] --format onnx|tflite|both --out DIR``: real INT8
files of a trained supernet's subnets, measured against what the search promised (SpaceEvo §5).

``RUN_DIR`` is a ``nasq supernet train`` run (then ``--subnet`` names the subnets; ``largest`` and
``smallest`` work) or a ``nasq search subnet`` limit folder (``--front``: the subnets of its Pareto front;
without ``--subnet``: its best subnet). ``--predictor FILE`` (an ``ort-int8`` or ``tflite-int8`` predictor
of this CPU, repeatable) adds the predicted latency; a subnet search's own predictor is used by default.
Writes ``OUT/deploy.json`` and ``OUT/deploy.csv`` (:mod:`nasq.deploy.deploy`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasq.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``export int8`` options (parsed from the words after ``int8``)."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a supernet run, or a subnet search's limit-<T>ms folder")
    p.add_argument("--subnet", action="append", default=[], metavar="S",
                   help="subnet string (repeatable); largest | smallest also work")
    p.add_argument("--front", action="store_true", help="a subnet search: every subnet of its Pareto front")
    p.add_argument("--format", default="onnx", help="onnx | tflite | both (default: onnx)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the files, deploy.json, deploy.csv")
    p.add_argument("--predictor", action="append", default=[], metavar="FILE",
                   help="latency predictor file(s) of this CPU for the predicted latency")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per file (default: 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default: 10)")


def targets(args: argparse.Namespace) -> tuple[Path, list[str], list[str]]:
    """The supernet run, the subnet strings and predictor files to use (checked before any work)."""
    from nasq.runfile import is_run_dir, read_run_file
    from nasq.spaces.spaceevo import space_from_name
    from nasq.supernet.run import is_supernet_run, read_run_settings

    run = Path(args.run_dir).expanduser().resolve()
    predictors = [str(Path(p).expanduser().resolve()) for p in args.predictor]
    subnets = list(args.subnet)
    if is_run_dir(run) and read_run_file(run).experiment == "subnet":
        opts = read_run_file(run).options
        supernet, predictors = Path(str(opts.supernet)), predictors or [str(opts.predictor)]
        if args.front or not subnets:
            import pandas as pd

            name = "pareto.csv" if args.front else "subnet_best.json"
            if not (run / name).is_file():
                raise ConfigError(f"{run} has no {name} yet; finish the search (`nasq resume {run}`) first")
            subnets += (pd.read_csv(run / name)["genome"].tolist() if args.front else
                        [json.loads((run / name).read_text())["genome"]])
    elif is_supernet_run(run):
        if args.front:
            raise ConfigError("--front is for a subnet search's folder (`nasq search subnet`); pass --subnet S")
        if not subnets:
            raise ConfigError(f"{run} is a supernet run: name the subnets with --subnet S (or largest)")
        supernet = run
    else:
        raise ConfigError(f"{run} is neither a supernet run (nasq-supernet.json) nor a subnet search; check "
                          "RUN_DIR")
    s = read_run_settings(supernet)
    cand = space_from_name(s.hyperspace).candidate(s.space)
    named = {"largest": cand.largest(), "smallest": cand.smallest()}
    subnets = [cand.encode(named[t]) if t in named else cand.encode(cand.decode(t)) for t in subnets]
    return supernet, list(dict.fromkeys(subnets)), predictors


def run(argv: list[str]) -> int:
    """Parse the words after ``nasq export int8`` and export (SpaceEvo §5)."""
    from nasq.deploy.deploy import deploy_subnet, formats_of, write_deploy
    from nasq.latency.measure import check_timing
    from nasq.latency.predictor import LatencyPredictor
    from nasq.supernet.run import InheritedSubnets

    p = argparse.ArgumentParser(prog="nasq export int8", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    formats = formats_of(args.format)
    check_timing(1, args.repeats, args.warmup)
    supernet, subnets, files = targets(args)
    preds = {}
    for f in files:
        pred = LatencyPredictor.load(f)  # a file of another CPU is refused here
        preds[pred.engine] = pred
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder")
    ev = InheritedSubnets(supernet, device="cpu")
    if not ev.int8_trained:
        raise ConfigError(f"supernet {supernet} has no LSQ+ epoch yet; train it with --qat-epochs >= 1")
    rows = []
    for sub in subnets:
        rows += deploy_subnet(ev, sub, formats, out, predictors=preds, repeats=args.repeats, warmup=args.warmup)
        for r in rows[-len(formats):]:
            pred = "" if r["predicted_ms"] is None else f", predicted {r['predicted_ms']:.3f} ms"
            print(f"nasq: {r['format']} {r['file']}: measured {r['measured_ms']:.3f} ms{pred}; INT8 test "
                  f"accuracy {100 * r['file_int8_test_acc']:.2f}% (fake-quant {100 * r['fake_quant_test_acc']:.2f}%)",
                  flush=True)
    js, csv_path = write_deploy(rows, out)
    print(f"nasq: {js}, {csv_path}")
    return 0
