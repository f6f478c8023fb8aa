"""Huffman-coded size of quantized weight symbols vs the entropy bound (JASQ §3.4).

Trained float weights are bucket-quantized (k = 256) to 4, 8 and 16 bits; all symbols of one width
form one stream coded with one canonical Huffman code, exactly as in the exported file. The bound is
the stream's zero-order empirical entropy ``N * H``; no symbol-by-symbol prefix code can go below it.
Baselines: zlib (level 9) and lzma (preset 9) on the same symbols (uint8, or uint16 for 16 bits),
and plain fixed-width ``b`` bits. Target: Huffman size / entropy bound <= 1.02.

Second table: whole model files stored three ways: every tensor packed at ``b`` bits, every tensor
Huffman-coded, and the per-tensor choice the exporter makes (each tensor in its smaller form given
its width's shared code; see :func:`nasq.quant.container.choose_forms`). Models: the same network
at one width for all layers, and small JASQ digits networks (the tests' tiny one and the
``nasq demo jasq`` skeleton, briefly trained) with their genomes' bits, where the code tables cost
more than the coding saves on small tensors.

    .venv/bin/python benchmarks/bench_huffman.py [--checkpoint STATE_DICT.pt --model resnet18]
"""

from __future__ import annotations

import argparse
import lzma
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, format_table, machine_note, median  # noqa: E402

from nasq.models.torchvision_nets import bits_for_layers, build_torchvision, quantizable_layers  # noqa: E402
from nasq.quant import huffman  # noqa: E402
from nasq.quant.bucket import quantize_symbols  # noqa: E402
from nasq.quant.container import file_nbytes, plan  # noqa: E402

CACHE = Path(os.environ.get("NASQ_BENCH_CACHE", Path(tempfile.gettempdir()) / "nasq-bench"))


def weights(args: argparse.Namespace) -> tuple[list[torch.Tensor], str]:
    """The quantizable layers' weights of a trained network, and where they came from."""
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is None:
        cached = sorted(CACHE.glob(f"{args.model}_cifar*.pt"), key=lambda p: p.stat().st_mtime)
        ckpt = cached[-1] if cached else None
    if ckpt is not None:
        state = torch.load(ckpt, weights_only=True)
        source = f"{args.model} trained on the CIFAR-10 subset ({ckpt.name})"
    else:
        from nasq.data import load_dataset
        from nasq.quant.policy import train_float

        splits = load_dataset("digits")
        net = build_torchvision(args.model, splits.num_classes, splits.input_shape)
        train_float(net, splits, 2.0)
        state, source = net.state_dict(), f"{args.model} trained 2 epochs on digits"
    net = build_torchvision(args.model, 10, (3, 32, 32))
    names = bits_for_layers(net, [8] * len(quantizable_layers(net)))
    return [state[n] for n in names], source


def entropy_bits(symbols: np.ndarray) -> float:
    """Zero-order empirical entropy of the stream, in bits (N * H)."""
    p = np.bincount(symbols) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * len(symbols))


def measure(tensors: list[torch.Tensor], bits: int, repeats: int) -> dict:
    sym = np.concatenate([quantize_symbols(w, bits, 256).symbols for w in tensors]).astype(np.int64)
    bound = entropy_bits(sym) / 8
    lengths = huffman.code_lengths(np.bincount(sym, minlength=2**bits))
    enc_t, dec_t = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        payload, blocks = huffman.encode(sym, lengths)
        enc_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        back = huffman.decode(payload, blocks, lengths, len(sym))
        dec_t.append(time.perf_counter() - t)
    assert np.array_equal(back, sym)
    pure = float((lengths[sym].astype(np.int64)).sum()) / 8
    total = len(payload) + len(huffman.table_bytes(lengths)) + 4 * len(blocks)
    raw = sym.astype(np.uint8 if bits <= 8 else "<u2").tobytes()
    z, x = len(zlib.compress(raw, 9)), len(lzma.compress(raw, preset=9))
    return {
        "bits": bits,
        "symbols": len(sym),
        "entropy_bits_per_symbol": 8 * bound / len(sym),
        "huffman_code_only": pure / bound,
        "huffman_stored": total / bound,
        "zlib9": z / bound,
        "lzma9": x / bound,
        "fixed_width": len(sym) * bits / 8 / bound,
        "encode_s": median(enc_t),
        "decode_s": median(dec_t),
    }


def choice_row(model: str, policy: str, items: list) -> dict:
    """File bytes of one model stored all packed, all Huffman-coded and with the per-tensor choice."""
    sizes = {c: file_nbytes(plan(items, coding=c)) for c in ("packed", "huffman")}
    t = time.perf_counter()
    best = plan(items)
    seconds = time.perf_counter() - t
    quantized = [e for e in best.entries if e.q is not None]
    return {
        "model": model,
        "policy": policy,
        "tensors": len(quantized),
        "all_packed_bytes": sizes["packed"],
        "all_huffman_bytes": sizes["huffman"],
        "per_tensor_bytes": file_nbytes(best),
        "per_tensor_vs_best_single": file_nbytes(best) / min(sizes.values()),
        "tensors_packed": sum(e.form == "packed" for e in quantized),
        "plan_s": seconds,
    }


def jasq_items(cfg: dict, seed: int, steps: int) -> tuple[list, str]:
    """State dict items of a JASQ digits network trained ``steps`` SGD steps, with its genome's bits."""
    from nasq.models.training import TrainSettings, state_bits, train_standalone
    from nasq.trainables.jasq import bit_rule_of, net_config_of, space_of, splits_of

    space, splits = space_of(cfg), splits_of(cfg)
    text = space.random_str(np.random.default_rng(seed))
    genome = space.decode(text)
    net_cfg = net_config_of(cfg, splits)
    net = train_standalone(genome, net_cfg, splits.train, TrainSettings(steps=steps, seed=seed), seed)
    bits = state_bits(net, genome, net_cfg, bit_rule_of(cfg))
    return [(k, v, bits.get(k, 32)) for k, v in net.state_dict().items()], text


def choice_rows(tensors: list[torch.Tensor], model: str, steps: int) -> list[dict]:
    """Rows of the per-tensor choice table: ``model``'s layers at 4/8/16 bits, then JASQ digits nets."""
    rows = []
    for bits in (4, 8, 16):
        items = [(f"w{i}", w, bits) for i, w in enumerate(tensors)]
        rows.append(choice_row(model, f"all layers {bits}-bit", items))
    for name, combinations, channels in (("tests' tiny", 2, 4), ("demo", 3, 8)):  # demo: nasq demo jasq
        cfg = {"dataset": "digits", "cells": 1, "combinations": combinations, "channels": channels}
        for seed in (0, 1):
            items, genome = jasq_items(cfg, seed, steps)
            rows.append(choice_row(f"JASQ digits, {name} (F={channels}, B={combinations})", genome, items))
    return rows


def choice_table(rows: list[dict]) -> str:
    """Markdown table of the per-tensor choice rows."""
    headers = ["model", "bits / genome", "tensors", "all packed B", "all Huffman B", "per-tensor B",
               "per-tensor / min", "packed tensors", "plan s"]
    return format_table(
        headers,
        [
            [r["model"], r["policy"], r["tensors"], r["all_packed_bytes"], r["all_huffman_bytes"],
             r["per_tensor_bytes"], f"{r['per_tensor_vs_best_single']:.4f}", r["tensors_packed"],
             f"{r['plan_s']:.2f}"]
            for r in rows
        ],
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jasq-steps", type=int, default=40, help="SGD steps of the JASQ digits networks")
    args = p.parse_args()
    tensors, source = weights(args)
    rows = [measure(tensors, b, args.repeats) for b in (4, 8, 16)]
    choices = choice_rows(tensors, args.model, args.jasq_steps)
    headers = [
        "bits",
        "symbols",
        "H (bits/sym)",
        "Huffman codes / bound",
        "Huffman stored / bound",
        "zlib-9 / bound",
        "lzma-9 / bound",
        "fixed b bits / bound",
        "encode s",
        "decode s",
    ]
    table = format_table(
        headers,
        [
            [
                r["bits"],
                r["symbols"],
                f"{r['entropy_bits_per_symbol']:.3f}",
                f"{r['huffman_code_only']:.4f}",
                f"{r['huffman_stored']:.4f}",
                f"{r['zlib9']:.4f}",
                f"{r['lzma9']:.4f}",
                f"{r['fixed_width']:.3f}",
                f"{r['encode_s']:.2f}",
                f"{r['decode_s']:.2f}",
            ]
            for r in rows
        ],
    )
    text = (
        f"## Huffman size vs entropy bound (target <= 1.02)\n\nWeights: {source}; bucket 256; "
        f"one code per bit width over all layers' symbols. 'stored' adds the zlib-compressed code "
        f"table, block index and byte padding of the 8192-symbol blocks. Times: median of "
        f"{args.repeats}.\n\n{table}\n\n"
        f"## Stored file: all packed vs all Huffman vs per-tensor choice\n\nBytes of the whole file "
        f"(header, tables, block index, payloads, bucket min/max, raw tensors, CRC). 'per-tensor' stores "
        f"each tensor packed at b bits or Huffman-coded, whichever is smaller under its width's shared "
        f"code; 'min' is the smaller single-form file. JASQ nets: {args.jasq_steps} SGD steps on digits, "
        f"random genomes (seeds 0, 1), stem/classifier/BN bits by the default rule; 'plan s' is the "
        f"time of the size accounting with the choice.\n\n{choice_table(choices)}\n\n"
        f"Machine: {machine_note()}\n"
        "Command: `.venv/bin/python benchmarks/bench_huffman.py`\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "huffman.md").write_text(text)
    import csv

    with open(RESULTS / "huffman.csv", "w", newline="") as f:  # one file, "table" tells the two apart
        w = csv.DictWriter(f, fieldnames=["table", *rows[0], *choices[0]], restval="")
        w.writeheader()
        w.writerows([{"table": "entropy", **r} for r in rows] + [{"table": "file", **r} for r in choices])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
