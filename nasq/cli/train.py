"""``nasq train RUN_DIR --genome G``: train a JASQ genome from scratch; report TEST accuracy and size."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import zlib
from pathlib import Path

from nasq.errors import ConfigError, GenomeError, NasqError

MODEL_FILE = "model.pt"
REPORT_FILE = "report.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    parser = sub.add_parser("train", help="train a JASQ genome of a run from scratch; test accuracy, size")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a `nasq search jasq` run directory")
    parser.add_argument("--genome", default="best", help="genome string, or 'best' (best fitness of the run)")
    parser.add_argument("--epochs", type=float, default=10.0, help="passes over the train split")
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (cosine to 0)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and minibatch seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/trained/<genome hash>)")
    parser.set_defaults(func=_run)


def _genome_of(run_dir: Path, genome: str) -> str:
    if genome != "best":
        return genome
    from nasq.jasq_report import BEST_JSON

    path = run_dir / BEST_JSON
    try:
        return json.loads(path.read_text())["best"][0]["genome"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"no best genome in {path}; pass --genome G (a genome from trials.csv)") from exc


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad training options (JASQ §4 from-scratch training) before the run, the data or torch
    are touched: one-line ConfigErrors, so a bad value never costs a training run or a written file."""
    if not (math.isfinite(args.epochs) and args.epochs > 0):
        raise ConfigError(f"--epochs must be a finite number > 0 (fractions allowed), got {args.epochs}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr must be a finite learning rate > 0, like 0.05; got {args.lr}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1 (torch intra-op threads), got {args.threads}")
    if not 0 <= args.seed < 2**63:
        raise ConfigError(f"--seed must be an integer in 0 .. 2**63-1, got {args.seed}")


def _canonical(space, text: str) -> str:
    """The canonical genome string, or a one-line GenomeError naming the bad genome."""
    try:
        return space.canonical(text)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        if isinstance(exc, NasqError):
            raise
        raise GenomeError(f"genome {text!r} is not a JASQ genome of this run ({exc}); pass a genome "
                          "from the run's trials.csv") from exc


def _out_dir(args: argparse.Namespace, run_dir: Path, genome_str: str) -> Path:
    out = (Path(args.out).expanduser() if args.out
           else run_dir / "trained" / f"{zlib.crc32(genome_str.encode()):08x}")
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out} cannot be a folder: {parent} is a file; pass a folder for "
                                  f"{MODEL_FILE} and {REPORT_FILE}")
            break
    return out


def _run(args: argparse.Namespace) -> int:
    check_args(args)
    import torch

    from nasq.models.training import (
        TrainSettings,
        epochs_to_steps,
        evaluate,
        quantize_network,
        train_standalone,
    )
    from nasq.runner import read_run_file
    from nasq.trainables.jasq import bit_rule_of, net_config_of, space_of, splits_of

    run_dir = Path(args.run_dir).expanduser().resolve()
    settings = read_run_file(run_dir)
    if settings.experiment != "jasq":
        raise ConfigError(f"{run_dir} is a {settings.experiment!r} run; `nasq train` trains JASQ genomes")
    cfg = settings.experiment_config
    space = space_of(cfg)
    genome_str = _canonical(space, _genome_of(run_dir, args.genome))
    genome = space.decode(genome_str)
    out = _out_dir(args, run_dir, genome_str)
    torch.set_num_threads(args.threads)
    splits = splits_of(cfg)
    net_cfg = net_config_of(cfg, splits)
    steps = epochs_to_steps(args.epochs, len(splits.train), args.batch_size)
    print(f"nasq: training {genome_str} from scratch: {steps} steps ({args.epochs:g} epochs) on "
          f"{len(splits.train)} examples", flush=True)
    t0 = time.perf_counter()
    net = train_standalone(genome, net_cfg, splits.train,
                           TrainSettings(steps=steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed),
                           seed=args.seed)
    seconds = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise ConfigError(f"training diverged with --lr {args.lr:g} (non-finite weights); nothing was "
                          "written; lower --lr")
    float_acc = evaluate(net, splits.test)
    size = quantize_network(net, genome, net_cfg, bit_rule_of(cfg), settings.options.bucket_size)
    result = {"genome": genome_str, "test_acc": evaluate(net, splits.test), "test_acc_float": float_acc,
              "val_acc": evaluate(net, splits.val), **size.as_dict(), "epochs": args.epochs, "steps": steps,
              "train_seconds": seconds, "model": str(out / MODEL_FILE)}
    _write_outputs(out, state, result)
    print(f"nasq: test_acc={result['test_acc']:.2f}% (quantized; float {float_acc:.2f}%)  "
          f"size_mb={size.size_mb_huffman:.4f} (stored file, each tensor Huffman-coded or packed; fixed "
          f"{size.size_mb_fixed:.4f}, "
          f"float {size.size_mb_float:.4f})  trained in {seconds:.1f} s")
    print(f"nasq: float state dict: {out / MODEL_FILE}; report: {out / REPORT_FILE}")
    return 0


def _write_outputs(out: Path, state: dict, result: dict) -> None:
    """Write the state dict and the report, each to a temp file first, then move both into place."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    tmp_model, tmp_report = out / f".{MODEL_FILE}.tmp", out / f".{REPORT_FILE}.tmp"
    try:
        torch.save(state, tmp_model)
        tmp_report.write_text(json.dumps(result, indent=2))
        os.replace(tmp_model, out / MODEL_FILE)
        os.replace(tmp_report, out / REPORT_FILE)
    finally:
        tmp_model.unlink(missing_ok=True)
        tmp_report.unlink(missing_ok=True)
