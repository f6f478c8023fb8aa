"""``nasq search quant-policy``: search a per-layer bit policy for a torchvision network (JASQ §4.1).

The float weights come from ``--checkpoint`` (a state dict), from torchvision (``--weights
DEFAULT``, online) or from training on the data set first (``--train-epochs E``). After the
search, the run directory gets ``quant_policy_report.{csv,md}`` (found policies beside float and
uniform 2/4/8/16-bit, JASQ Table 1's columns) and ``pareto_front.{csv,png}`` of (val_acc, size_mb).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nasq import runner
from nasq.cli.search_common import add_search_arguments, launch, settings_from_args
from nasq.data import Splits, load_dataset, resolve_spec
from nasq.errors import ConfigError
from nasq.models.torchvision_nets import (
    MODELS,
    build_torchvision,
    check_model,
    load_state_dict,
    quantizable_layers,
)
from nasq.pareto import plot_front, write_front_csv
from nasq.quant.policy import train_float
from nasq.quant.policy_report import baseline_rows, policy_row, write_policy_report

CHECKPOINT_NAME = "float_state_dict.pt"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``quant-policy`` search target."""
    p = sub.add_parser("quant-policy", help="search a per-layer bit policy for an existing network")
    p.add_argument("--model", required=True, help=" | ".join(MODELS))
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--checkpoint", default=None, help="trained float state dict (torch.save of state_dict())"
    )
    src.add_argument("--weights", default=None, help="torchvision pretrained weights, e.g. DEFAULT (online)")
    p.add_argument(
        "--train-epochs",
        type=float,
        default=None,
        help="train (or, with --weights, fine-tune) this many epochs on the training split first",
    )
    p.add_argument("--lr", type=float, default=0.05, help="training learning rate")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size")
    p.add_argument("--dataset", default="digits", help="digits | cifar10 | npz:PATH")
    p.add_argument("--data-root", default=None, help="torchvision CIFAR-10 folder (cifar10 only)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many examples")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--target-size-mb", type=float, default=None, help="target size TS of Eq. 1 (MB)")
    p.add_argument("--gamma", type=float, default=-0.2, help="Eq. 1 exponent over the target size (< 0)")
    p.add_argument("--bucket-size", type=int, default=256, help="values per quantization bucket")
    p.add_argument("--bit-choices", default="4,8,16", help="comma-separated widths the search may use")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial")
    p.add_argument("--report-top", type=int, default=3, help="found policies listed in the report")
    add_search_arguments(p, population=16, sample=4, samples=32)
    p.set_defaults(func=_run)


def _choices(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise ConfigError(f"--bit-choices {text!r} must be comma-separated integers like 4,8,16") from exc


def prepare_weights(args: argparse.Namespace, splits: Splits, out_dir: Path) -> tuple[torch.nn.Module, Path]:
    """Build the network and get its float weights per the CLI options; return it and the state dict path."""
    net = build_torchvision(args.model, splits.num_classes, splits.input_shape, weights=args.weights)
    if args.checkpoint:
        if args.train_epochs:
            raise ConfigError("--checkpoint and --train-epochs exclude each other; drop one")
        path = Path(args.checkpoint).expanduser().resolve()
        return load_state_dict(net, str(path)), path
    if not args.weights and not args.train_epochs:
        raise ConfigError("no float weights: pass --checkpoint PATH, --weights DEFAULT or --train-epochs E")
    if args.weights and not args.train_epochs and splits.num_classes != 1000:
        print(
            "nasq: note: the pretrained classifier was replaced for this data set and is untrained; "
            "add --train-epochs E to fine-tune it",
            flush=True,
        )
    if args.train_epochs:
        print(f"nasq: training {args.model} for {args.train_epochs} epochs on {args.dataset}", flush=True)
        stats = train_float(
            net, splits, args.train_epochs, lr=args.lr, batch_size=args.batch_size, seed=args.data_seed
        )
        print(
            f"nasq: trained in {stats['train_seconds']:.1f}s, final loss {stats['train_loss']:.3f}",
            flush=True,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    torch.save(net.state_dict(), path)
    return net.eval(), path


def _run(args: argparse.Namespace) -> int:
    check_model(args.model)
    spec, data_root = resolve_spec(args.dataset, args.data_root)
    splits = load_dataset(spec, data_root=data_root, seed=args.data_seed, limit=args.limit)
    probe = build_torchvision(args.model, splits.num_classes, splits.input_shape)
    cfg: dict = {
        "model": args.model,
        "num_layers": len(quantizable_layers(probe)),
        "dataset": spec,
        "data_root": data_root,
        "data_seed": args.data_seed,
        "limit": args.limit,
        "bucket_size": args.bucket_size,
        "bit_choices": _choices(args.bit_choices),
        "target_size_mb": args.target_size_mb,
        "gamma": args.gamma,
        "cpus_per_trial": args.cpus_per_trial,
    }
    trained: dict = {}

    def add_weights(settings: runner.SearchSettings, run_dir: Path) -> None:
        """Train or load the float weights into the run directory; the trials read them."""
        trained["net"], ckpt = prepare_weights(args, splits, run_dir)
        settings.experiment_config["checkpoint"] = str(ckpt)

    run_dir = launch(settings_from_args(args, "quant-policy", cfg), add_weights)
    return _write_reports(run_dir, trained["net"], splits, args)


def _write_reports(run_dir: Path, net: torch.nn.Module, splits, args: argparse.Namespace) -> int:
    from nasq.report import load_trials

    frame = load_trials(run_dir)
    done = frame.dropna(subset=["objective"]) if not frame.empty else frame
    if done.empty:
        print("nasq: no trial finished; no report written")
        return 1
    rows = done[["genome", "val_acc", "size_mb"]].to_dict("records")
    write_front_csv(rows, run_dir / "pareto_front.csv")
    plot_front(rows, run_dir / "pareto_front.png", title=f"{args.model} bit policies")
    best = done.sort_values("objective", ascending=False).drop_duplicates("genome").head(args.report_top)
    found = [
        policy_row(f"found #{i + 1}", net, [int(b) for b in g.split("-")], splits, args.bucket_size)
        for i, g in enumerate(best["genome"])
    ]
    table = baseline_rows(net, splits, args.bucket_size) + found
    csv_path, md_path = write_policy_report(table, run_dir, title=f"{args.model} on {args.dataset}")
    print(md_path.read_text())
    print(f"nasq: report: {csv_path}, {md_path}; Pareto front: {run_dir / 'pareto_front.csv'}")
    return 0
