"""``nasq train RUN_DIR --genome G``: train a JASQ genome from scratch; report TEST accuracy and size."""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib
from pathlib import Path

from nasq.errors import ConfigError

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
    except (OSError, json.JSONDecodeError, KeyError, IndexError) as exc:
        raise ConfigError(f"no best genome in {path}; pass --genome G (a genome from trials.csv)") from exc


def _run(args: argparse.Namespace) -> int:
    import torch

    from nasq.models.training import (
        TrainSettings,
        epochs_to_steps,
        evaluate,
        quantize_network,
        train_standalone,
    )
    from nasq.runner import read_run_file
    from nasq.trainables.jasq import bit_rule_of, net_config_of, option, space_of, splits_of

    run_dir = Path(args.run_dir).expanduser().resolve()
    settings = read_run_file(run_dir)
    if settings.experiment != "jasq":
        raise ConfigError(f"{run_dir} is a {settings.experiment!r} run; `nasq train` trains JASQ genomes")
    if args.epochs <= 0 or args.batch_size < 1:
        raise ConfigError("--epochs must be > 0 and --batch-size >= 1")
    torch.set_num_threads(args.threads)
    cfg = settings.experiment_config
    space = space_of(cfg)
    genome_str = space.canonical(_genome_of(run_dir, args.genome))
    genome = space.decode(genome_str)
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
    out = Path(args.out) if args.out else run_dir / "trained" / f"{zlib.crc32(genome_str.encode()):08x}"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / MODEL_FILE)
    float_acc = evaluate(net, splits.test)
    size = quantize_network(net, genome, net_cfg, bit_rule_of(cfg), int(option(cfg, "bucket_size")))
    result = {"genome": genome_str, "test_acc": evaluate(net, splits.test), "test_acc_float": float_acc,
              "val_acc": evaluate(net, splits.val), **size.as_dict(), "epochs": args.epochs, "steps": steps,
              "train_seconds": seconds, "model": str(out / MODEL_FILE)}
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out / REPORT_FILE)
    print(f"nasq: test_acc={result['test_acc']:.2f}% (quantized; float {float_acc:.2f}%)  "
          f"size_mb={size.size_mb_huffman:.4f} (Huffman; fixed {size.size_mb_fixed:.4f}, "
          f"float {size.size_mb_float:.4f})  trained in {seconds:.1f} s")
    print(f"nasq: float state dict: {out / MODEL_FILE}; report: {out / REPORT_FILE}")
    return 0
