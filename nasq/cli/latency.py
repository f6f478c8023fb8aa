"""``nasq latency build|eval|measure|predict``: the INT8 latency predictor (SpaceEvo Sec. 4) on the CLI.

- ``build``: measure sampled blocks (and calibration chains) on this CPU, fit and save the predictor;
  ``--hyperspace spaceevo[:RES]`` draws them from a SpaceEvo hyperspace (blocks and subnets).
- ``eval``: measure unseen random models (a hyperspace's subnets) end to end, compare with the predictor
  (within ±10 % / ±5 %, table + PNG).
- ``measure``: time one block key, chain key (``+``-joined) or ONNX file.
- ``predict``: predict block keys (or chain keys) with a saved predictor.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nasq.errors import ConfigError

if TYPE_CHECKING:
    from nasq.latency.evaluate import BuildReport

DEFAULT_PREDICTOR = "latency/{engine}.predictor.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``latency`` verb and its sub-commands."""
    parser = sub.add_parser("latency", help="measure INT8 latency and build/evaluate/query the predictor")
    cmds = parser.add_subparsers(dest="latency_cmd", metavar="CMD")
    cmds.required = True

    b = cmds.add_parser("build", help="measure sampled blocks and fit the latency predictor")
    _build_args(b)
    b.set_defaults(func=_build)

    e = cmds.add_parser("eval", help="accuracy on unseen whole models: within ±5/±10%%, RMSPE, PNG")
    _timing_args(e, engine=False)
    e.add_argument("--predictor", required=True, help="predictor file from `nasq latency build`")
    e.add_argument("--models", type=int, default=40, help="unseen models: subnets of random candidate "
                   "spaces for a hyperspace, else stem + 4-10 blocks + head")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--space", default=None, help="block space (default: the predictor's)")
    where.add_argument("--hyperspace", default=None, metavar="NAME[:RES]",
                       help="evaluate on subnets of this hyperspace (default: the predictor's)")
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--out", default=None, help="folder for eval.json, eval.csv and the PNG "
                   "(default: next to the predictor)")
    e.add_argument("--allow-foreign", action="store_true", help="accept a predictor from another device")
    e.set_defaults(func=_eval)

    m = cmds.add_parser("measure", help="time one block/chain key or ONNX file on this CPU")
    m.add_argument("target", metavar="SPEC_KEY_OR_ONNX", help="e.g. mbv2-r28-i32-o32-k3-s1-e6, or model.onnx")
    m.add_argument("--engine", default="ort-int8")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--repeats", type=int, default=50)
    m.add_argument("--warmup", type=int, default=10)
    m.set_defaults(func=_measure)

    p = cmds.add_parser("predict", help="predict block keys (or '+'-joined chain keys)")
    p.add_argument("--predictor", required=True, help="predictor file from `nasq latency build`")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--allow-foreign", action="store_true", help="accept a predictor from another device")
    p.set_defaults(func=_predict)


def _build_args(b: argparse.ArgumentParser) -> None:
    """The options of ``nasq latency build`` (also the defaults of :func:`build_options`)."""
    _timing_args(b)
    b.add_argument("--samples", type=int, default=250, help="body blocks to measure (default 250)")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--space", default=None, help="hand-made block space: spaceevo-blocks "
                       "(default) | tiny")
    where.add_argument("--hyperspace", default=None, metavar="NAME[:RES]",
                       help="measure the blocks a SpaceEvo hyperspace can hold (all types, widths, strides, "
                       "resolutions; stem and head) and calibrate on its subnets: spaceevo[:RES] | "
                       "spaceevo-tiny[:RES], e.g. spaceevo:224")
    b.add_argument("--calib-chains", type=int, default=24,
                   help="whole chains measured for the overhead (subnets for --hyperspace)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="predictor file (default latency/<engine>.predictor.json)")


def build_options(**given: object) -> argparse.Namespace:
    """The options of ``nasq latency build`` as its parser gives them: its defaults, then ``given``
    (e.g. ``hyperspace="spaceevo-tiny", samples=20``); for :func:`build_from_options` (SpaceEvo Sec. 4).

    Raises:
        ConfigError: a name that is no option of ``nasq latency build``.
    """
    parser = argparse.ArgumentParser(prog="nasq latency build", add_help=False)
    _build_args(parser)
    args = parser.parse_args([])
    unknown = sorted(set(given) - set(vars(args)))
    if unknown:
        raise ConfigError(f"unknown `nasq latency build` option(s) {unknown}; known: {sorted(vars(args))}")
    for name, value in given.items():
        setattr(args, name, value)
    return args


def check_build(args: argparse.Namespace) -> tuple[str, Path]:
    """Validate the options of ``nasq latency build`` before anything is measured or Ray starts (Sec. 4).

    Returns:
        The block space (or hyperspace view) to sample and the predictor file to write.

    Raises:
        ConfigError: a bad engine, space, count, timing option or output path (one line).
    """
    from nasq.latency.dataset import get_space
    from nasq.latency.engines import resolve_engine
    from nasq.latency.evaluate import check_counts

    resolve_engine(args.engine)
    space = _space_arg(args) or "spaceevo-blocks"
    get_space(space)
    check_counts(samples=args.samples, calib_chains=args.calib_chains, actors=args.actors, seed=args.seed)
    _check_timing(args)
    out = _check_out_file(Path(args.out or DEFAULT_PREDICTOR.format(engine=args.engine)))
    return space, out


def build_from_options(args: argparse.Namespace) -> "BuildReport":
    """Measure, fit and save the predictor of ``nasq latency build`` (SpaceEvo Sec. 4): the options are
    checked first (:func:`check_build`), then Ray is joined when measuring actors are asked for."""
    from nasq.latency.evaluate import build_predictor

    space, out = check_build(args)
    return build_predictor(args.engine, space=space, samples=args.samples, calib_chains=args.calib_chains,
                           actors=args.actors, settings=_settings(args, args.engine), seed=args.seed, out=out,
                           stat=args.stat or "median")


def _timing_args(parser: argparse.ArgumentParser, engine: bool = True) -> None:
    if engine:
        parser.add_argument("--engine", default="ort-int8",
                            help="ort-int8 | ort-fp32 | tflite-int8 | tflite-fp32")
    parser.add_argument("--actors", type=int, default=2,
                        help="measuring Ray actors, one CPU each (0 = no Ray)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    parser.add_argument("--stat", default=None, choices=("median", "p25"),
                        help="timing statistic: median (default), or p25 when the CPU is shared")


def _check_timing(args: argparse.Namespace) -> None:
    """Refuse timing options that cannot work, before anything is measured or Ray starts."""
    if args.repeats < 1 or args.warmup < 0 or args.actors < 0:
        raise ConfigError("--repeats must be >= 1, --warmup >= 0 and --actors >= 0")
    if args.actors > 0 and not (args.address or os.environ.get("RAY_ADDRESS")):
        cpus = _local_cpus()
        if args.actors > cpus:  # a local Ray gets this many CPUs; more actors would wait forever
            raise ConfigError(f"--actors {args.actors} needs {args.actors} CPUs but a local Ray here gets "
                              f"{cpus}; use --actors {cpus} or fewer (0 = measure without Ray)")


def _local_cpus() -> int:
    """CPUs a local Ray started by nasq gets (``NASQ_RAY_NUM_CPUS``, else all of this machine's, as Ray counts)."""
    from nasq.runner import local_num_cpus

    return int(local_num_cpus(os.cpu_count() or 1))


def _check_out_file(path: Path, flag: str = "--out") -> Path:
    """A file path to write later: not a directory, and no existing file where a folder must be."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; pass a file name such as {path / 'predictor.json'}")
    _check_out_parents(path, flag)
    return path


def _check_out_parents(path: Path, flag: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder; pass another {flag}")
            return


def _settings(args: argparse.Namespace, engine: str):
    from nasq.latency.dataset import MeasureSettings

    _check_timing(args)
    if args.actors > 0:
        from nasq.runner import connect_ray

        connect_ray(args.address)
    return MeasureSettings(engine=engine, repeats=args.repeats, warmup=args.warmup)


def _build(args: argparse.Namespace) -> int:
    rep = build_from_options(args)
    out = rep.path
    p = rep.predictor
    print(f"nasq: measured {rep.blocks} blocks and {rep.chains} chains in {rep.measure_s:.1f} s; "
          f"predictor version {p.version} ({len(p.table)} table entries, "
          f"{len(p.type_models)} per-type models) -> {out}")
    for f in rep.files[1:]:
        print(f"nasq: data set {f}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from nasq.latency.dataset import get_space
    from nasq.latency.evaluate import (check_counts, evaluate_predictor, metrics_table,
                                       plot_predicted_vs_measured)
    from nasq.latency.predictor import LatencyPredictor

    check_counts(models=args.models, actors=args.actors, seed=args.seed)
    _check_timing(args)
    pred = LatencyPredictor.load(args.predictor, allow_foreign=args.allow_foreign)
    space = _space_arg(args) or pred.meta.get("space", "spaceevo-blocks")
    blocks = get_space(space)
    out = Path(args.out) if args.out else Path(args.predictor).parent
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for the eval table, JSON and PNG")
    _check_out_parents(out, "--out")
    res = evaluate_predictor(pred, space=space, models=args.models, actors=args.actors,
                             settings=_settings(args, pred.engine), seed=args.seed, stat=args.stat)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.predictor).name.removesuffix(".json")
    png = plot_predicted_vs_measured({"predictor": (res.measured_ms, res.predicted_ms)},
                                     out / f"{stem}.eval.png", f"{pred.engine}: {args.models} unseen models")
    (out / f"{stem}.eval.json").write_text(json.dumps(
        {"space": space, "metrics": res.metrics, "table_hits": res.table_hits, "version": pred.version,
         "models": [{"key": k, "measured_ms": float(m), "predicted_ms": float(p)}
                    for k, m, p in zip(res.keys, res.measured_ms, res.predicted_ms)]}, indent=1))
    print(metrics_table({f"{pred.engine} v{pred.version}": res.metrics}))
    if blocks.hyperspace is not None:
        from nasq.latency.evaluate import TARGETS

        m = res.metrics
        print(f"nasq: {space}: {m['n']} unseen subnets, {m['within_10']:.1%} within ±10 % (target "
              f"{TARGETS['within_10']:.0%}), {m['within_5']:.1%} within ±5 % "
              f"(target {TARGETS['within_5']:.0%})")
    print(f"nasq: {res.table_hits:.0%} of the models' blocks were in the table; plot {png}")
    return 0


def _space_arg(args: argparse.Namespace) -> str | None:
    """``--space`` or ``--hyperspace`` (a hyperspace name must be one; the parser allows only one flag)."""
    if args.hyperspace is None:
        return args.space
    from nasq.latency.dataset import HYPERSPACES

    if args.hyperspace.partition(":")[0] not in HYPERSPACES:
        names = ", ".join(h + "[:RES]" for h in HYPERSPACES)
        raise ConfigError(f"--hyperspace {args.hyperspace!r} is not a hyperspace; use one of {names} "
                          "(hand-made block spaces go to --space)")
    return args.hyperspace


def _measure(args: argparse.Namespace) -> int:
    from nasq.latency import measure

    measure.check_timing(args.threads, args.repeats, args.warmup)
    measure.resolve_engine(args.engine)
    target = args.target
    if target.endswith(".onnx") or Path(target).is_file():
        m = measure.measure_onnx(target, args.engine, threads=args.threads, repeats=args.repeats,
                                 warmup=args.warmup)
    else:
        from nasq.latency.predictor import as_specs

        specs = as_specs(target.split("+"))
        m = measure.measure_specs(specs, args.engine, threads=args.threads, repeats=args.repeats,
                                  warmup=args.warmup)
    print(f"{m.key}\t{m.engine}\tmedian {m.median_ms:.4f} ms\tIQR {m.p25_ms:.4f}-{m.p75_ms:.4f} ms"
          f"\t{m.repeats} repeats\tload {m.load_avg[0]:.2f}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nasq.latency.predictor import LatencyPredictor, as_specs

    pred = LatencyPredictor.load(args.predictor, allow_foreign=args.allow_foreign)
    parsed = [(key, as_specs(key.split("+"))) for key in args.keys]  # every key checked before any output
    for key, specs in parsed:
        if len(specs) == 1:
            value = float(pred.predict(specs)[0])
            source = "table" if specs[0].key() in pred.table else "regressor"
        else:
            value, source = pred.predict_model(specs), "chain"
        print(f"{key}\t{value:.6g} ms\t{source}")
    return 0
