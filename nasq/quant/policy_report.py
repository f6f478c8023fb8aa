"""Bit-policy report in the shape of JASQ Table 1: found policies beside uniform widths and float.

Every row is computed by the same quantizer and size accounting on the same trained network and
data: validation and test accuracy (percent), Huffman-coded size, fixed-width size and the
compression rate against float32. The Pareto front of a search is written by the one front writer,
:func:`nasq.jasq_report.write_front_outputs`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from torch import nn

from nasq.data import Splits
from nasq.models.torchvision_nets import bits_for_layers, quantizable_layers
from nasq.quant.policy import accuracy, quantized_copy

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "method",
    "policy",
    "mean_bits",
    "val_acc",
    "test_acc",
    "size_mb",
    "size_mb_fixed",
    "compression_ratio",
)
UNIFORM_BITS = (2, 4, 8, 16)


def policy_row(
    method: str,
    net: nn.Module,
    bits: Sequence[int],
    splits: Splits,
    bucket_size: int = 256,
    device: str = "cpu",
) -> dict:
    """One table row: ``net`` quantized with per-layer ``bits`` (32 = float) (JASQ §4.1, Table 1)."""
    state = net.state_dict()
    bits_map = bits_for_layers(net, list(bits))
    qnet, report = quantized_copy(net, state, bits_map, bucket_size)
    n = sum(state[k].numel() for k in bits_map)
    return {
        "method": method,
        "policy": "-".join(str(b) for b in bits),
        "mean_bits": sum(state[k].numel() * b for k, b in bits_map.items()) / max(n, 1),
        "val_acc": accuracy(qnet, splits.val, device=device),
        "test_acc": accuracy(qnet, splits.test, device=device),
        "size_mb": report.size_mb_huffman,
        "size_mb_fixed": report.size_mb_fixed,
        "compression_ratio": report.size_mb_float / report.size_mb_huffman,
    }


def baseline_rows(
    net: nn.Module,
    splits: Splits,
    bucket_size: int = 256,
    widths: Iterable[int] = UNIFORM_BITS,
    device: str = "cpu",
) -> list[dict]:
    """Rows for float32 and for every uniform width in ``widths`` on the same network (JASQ Table 1)."""
    n = len(quantizable_layers(net))
    rows = [policy_row("float32", net, [32] * n, splits, bucket_size, device)]
    rows += [policy_row(f"uniform {b}-bit", net, [b] * n, splits, bucket_size, device) for b in widths]
    return rows


def found_rows(trials: "pd.DataFrame", net: nn.Module, splits: Splits, bucket_size: int = 256, top: int = 3) -> list[dict]:
    """Rows of the ``top`` distinct policies of a search's finished trials by fitness (``objective``)."""
    best = trials.sort_values("objective", ascending=False).drop_duplicates("genome").head(top)
    return [policy_row(f"found #{i + 1}", net, [int(b) for b in g.split("-")], splits, bucket_size)
            for i, g in enumerate(best["genome"])]


def write_policy_report(
    rows: Sequence[dict], out_dir: str | Path, stem: str = "quant_policy_report", title: str = ""
) -> tuple[Path, Path]:
    """Write the rows as CSV and as a Markdown table; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md_path.write_text(markdown_table(rows, title))
    return csv_path, md_path


def markdown_table(rows: Sequence[dict], title: str = "") -> str:
    """Markdown table of the report rows (accuracy in percent, size in MB = 2**20 bytes)."""
    head = [
        "method",
        "val acc %",
        "test acc %",
        "size MB (Huffman)",
        "size MB (fixed)",
        "compression",
        "mean bits",
        "policy",
    ]
    lines = [f"## {title}\n" if title else "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        policy = r["policy"] if len(r["policy"]) <= 60 else r["policy"][:57] + "..."
        lines.append(
            f"| {r['method']} | {r['val_acc']:.2f} | {r['test_acc']:.2f} | {r['size_mb']:.4f} | "
            f"{r['size_mb_fixed']:.4f} | {r['compression_ratio']:.2f}x | {r['mean_bits']:.2f} | "
            f"`{policy}` |"
        )
    return "\n".join(line for line in lines if line != "") + "\n"
