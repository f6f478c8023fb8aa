"""``nasq export``: write a compressed model file (JASQ §3.4) and print its sizes.

Three sources of weights:

* ``nasq export RUN_DIR --genome G``: a ``jasq`` run: the network ``nasq train RUN_DIR --genome G``
  trained (``RUN_DIR/trained/<hash>/model.pt``, or ``--checkpoint``), with the genome's cell bits and
  the run's bit rule; a ``quant-policy`` run: the run's trained float weights with bit policy ``G``.
* ``nasq export STATE_DICT.pt --model resnet18 --bits-policy 8,4,...``: a torchvision network's state
  dict with one width per quantizable layer.

The file's length on disk is the printed Huffman size; ``--verify`` loads it back and checks it.

``nasq export int8 RUN_DIR …`` writes real INT8 ONNX / TFLite files of a supernet's subnets instead
(SpaceEvo §5; :mod:`nasq.cli.export_int8`).
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

from nasq.errors import CheckpointError, ConfigError, NasqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` verb."""
    p = sub.add_parser("export", help="write a quantized, Huffman-coded model file (or: export int8 …, "
                       "real INT8 ONNX/TFLite files of a supernet's subnets)")
    p.add_argument(
        "source", metavar="RUN_DIR_OR_CHECKPOINT", help="a jasq/quant-policy run dir, or a state dict; or int8"
    )
    p.add_argument("--genome", default=None, help="JASQ genome, or the bit policy of a quant-policy run")
    p.add_argument(
        "--checkpoint", default=None, help="jasq runs: trained state dict (default: from nasq train)"
    )
    p.add_argument("--model", default=None, help="torchvision model of a state dict source, e.g. resnet18")
    p.add_argument(
        "--bits-policy", default=None, help="one width per quantizable layer: 8,4,16,... or 8-4-16-..."
    )
    p.add_argument(
        "--bucket-size", type=int, default=None, help="values per bucket (default: the run's, or 256)"
    )
    p.add_argument("--out", default=None, help="output file (default: beside the weights, .nasqz)")
    p.add_argument("--verify", action="store_true", help="load the file back and check it bit for bit")
    p.set_defaults(func=_run)


def load_state(path: str | Path) -> dict[str, "torch.Tensor"]:
    """Read a state dict with ``torch.load(weights_only=True)``; CheckpointError when unusable."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} not found; check the path") from exc
    except Exception as exc:  # pickle/zip errors and foreign objects
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(exc).__name__}); pass a state dict "
            "saved with torch.save(model.state_dict(), path)"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} is not a state dict of tensors; save model.state_dict()")
    return state


#: Widths an exported tensor may have: 1..16 bits quantized, or 32 to keep it float (JASQ §3.4).
ALLOWED_BITS: tuple[int, ...] = (*range(1, 17), 32)


def parse_policy(text: str, what: str = "--bits-policy") -> list[int]:
    """Widths from ``"8,4,16"`` or ``"8-4-16"``; each must be one of :data:`ALLOWED_BITS`."""
    tokens = [t.strip() for t in str(text).replace(",", "-").split("-")]
    bad = [t for t in tokens if not (t.isascii() and t.isdigit())]
    if bad:
        raise ConfigError(f"{what} {text!r} must list integer widths (ASCII digits), like 8,4,16; "
                          f"bad token {bad[0]!r}")
    widths = [int(t) for t in tokens]
    wrong = sorted({w for w in widths if w not in ALLOWED_BITS})
    if wrong:
        raise ConfigError(f"{what} {text!r} has unsupported width(s) {wrong}; use 1..16 bits, or 32 to "
                          "keep a layer float")
    return widths


def _torchvision(state_path: Path, model: str, policy: list[int]) -> tuple[dict, dict[str, int]]:
    from nasq.models.torchvision_nets import bits_for_layers, build_torchvision

    state = load_state(state_path)
    bits = bits_for_layers(build_torchvision(model, 10, (3, 32, 32)), policy)
    missing = sorted(set(bits) - set(state))
    if missing:
        raise CheckpointError(f"{state_path} lacks layers of {model} ({missing[:3]}); check --model")
    return state, bits


def _from_run(run_dir: Path, args: argparse.Namespace) -> tuple[dict, dict[str, int], Path, int]:
    from nasq.runner import read_run_file

    settings = read_run_file(run_dir)
    cfg = settings.experiment_config
    bucket = int(cfg.get("bucket_size") or 256)
    if not args.genome:
        raise ConfigError(f"exporting from a run needs --genome G (a genome from {run_dir / 'trials.csv'})")
    if settings.experiment == "quant-policy":
        policy = parse_policy(args.genome, "--genome")
        weights = Path(cfg.get("weights_file") or cfg["checkpoint"])  # the float weights the trials read
        state, bits = _torchvision(weights, cfg["model"], policy)
        return state, bits, weights, bucket
    if settings.experiment != "jasq":
        raise ConfigError(
            f"{run_dir} is a {settings.experiment!r} run; export handles jasq and quant-policy runs"
        )
    from nasq.models.nasnet import build_network
    from nasq.models.training import state_bits
    from nasq.trainables.jasq import bit_rule_of, net_config_of, space_of, splits_of

    space = space_of(cfg)
    try:
        genome_str = space.canonical(args.genome)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        if isinstance(exc, NasqError):
            raise
        raise ConfigError(f"--genome {args.genome!r} is not a JASQ genome of this run ({exc}); pass a "
                          "genome from the run's trials.csv") from exc
    ckpt = (
        Path(args.checkpoint)
        if args.checkpoint
        else run_dir / "trained" / f"{zlib.crc32(genome_str.encode()):08x}" / "model.pt"
    )
    if not ckpt.is_file():
        raise CheckpointError(
            f"no trained weights at {ckpt}; run `nasq train {run_dir} --genome {genome_str}` "
            "first or pass --checkpoint"
        )
    genome = space.decode(genome_str)
    net_cfg = net_config_of(cfg, splits_of(cfg))
    net = build_network(genome, net_cfg)
    state = load_state(ckpt)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt} does not hold genome {genome_str}'s network; check --genome") from exc
    return state, state_bits(net, genome, net_cfg, bit_rule_of(cfg)), ckpt, bucket


def _out_path(args: argparse.Namespace, weights: Path) -> Path:
    """The output file: ``--out`` (an existing folder gets ``<weights stem>.nasqz`` inside it), else
    the weights' path with suffix ``.nasqz``."""
    out = Path(args.out).expanduser() if args.out else weights.with_suffix(".nasqz")
    if out.is_dir():
        out = out / weights.with_suffix(".nasqz").name
    if out.resolve() == weights.resolve():
        raise ConfigError(f"--out {out} is the weights file itself; pass another file name (e.g. .nasqz)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"cannot write {out}: {parent} is a file, not a folder; pass another --out")
            break
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; pass a file name such as model.nasqz")
    return out


def _run(args: argparse.Namespace) -> int:
    from nasq.quant.bucket import check_bucket_size, quantize_dequantize
    from nasq.quant.export import export_model, load_compressed

    if args.bucket_size is not None:
        check_bucket_size(args.bucket_size)
    src = Path(args.source).expanduser()
    if src.is_dir():
        state, bits, weights, bucket = _from_run(src.resolve(), args)
    elif src.is_file():
        if not (args.model and args.bits_policy):
            raise ConfigError("a state dict source needs --model NAME and --bits-policy 8,4,...")
        policy = parse_policy(args.bits_policy)
        state, bits = _torchvision(src, args.model, policy)
        weights, bucket = src, 256
    else:
        raise CheckpointError(f"{src} is neither a run directory nor a checkpoint file; check the path")
    bucket = args.bucket_size if args.bucket_size is not None else bucket
    out = _out_path(args, weights)
    report = export_model(state, bits, out, bucket_size=bucket)
    print(
        f"nasq: wrote {out}: {report.size_mb_huffman:.4f} MB (= file length; {report.num_packed_tensors} "
        f"tensors packed, the rest Huffman-coded); fixed "
        f"{report.size_mb_fixed:.4f} MB; float {report.size_mb_float:.4f} MB; "
        f"compression {report.compression_ratio:.2f}x"
    )
    if args.verify:
        import torch

        back = load_compressed(out)
        for name, w in state.items():
            expect = quantize_dequantize(w, bits.get(name, 32), bucket) if w.is_floating_point() else w
            if not torch.equal(back[name], expect):
                raise CheckpointError(f"verification failed for tensor {name!r}; report this as a bug")
        print(f"nasq: verified {len(back)} tensors bit for bit")
    return 0
