"""Model size accounting for quantized networks (JASQ §3.4 and Eq. 1's ``size``).

Three sizes, in MB of 2**20 bytes (the unit of JASQ Table 1, where float ResNet18 is 44.6 MB):

* ``size_mb_float``: every floating-point value at 32 bits;
* ``size_mb_fixed``: ``b`` bits per quantized value plus 2 float32 (min, max) per bucket, and 32 bits
  per value kept as float;
* ``size_mb_huffman``: the exact length of the compressed model file (see
  :mod:`nasq.quant.container`): each tensor's symbols Huffman-coded (with the code tables and block
  index of its width) or packed at ``b`` bits, whichever is smaller, bucket min/max, unquantized
  tensors and the header. ``nasq export`` writes a file of exactly this size, never larger than
  with all tensors Huffman-coded or all packed. The name is kept for the trial result keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from nasq.quant.bucket import FLOAT_BITS, dequantize
from nasq.quant.container import Plan, file_nbytes, plan

MB = 2**20


@dataclass(frozen=True)
class SizeReport:
    """Sizes of one model under one bit policy (MB = 2**20 bytes)."""

    size_mb_float: float  # all floating-point values at 32 bits
    size_mb_fixed: float  # b bits/value + 2 float32 per bucket; float tensors at 32 bits
    size_mb_huffman: float  # exact compressed file length
    num_values: int  # floating-point values counted
    num_quantized: int  # of which quantized (bits < 32)
    num_packed_tensors: int = 0  # quantized tensors stored packed at b bits rather than Huffman-coded

    @property
    def compression_ratio(self) -> float:
        """Float size divided by the Huffman-coded size."""
        return self.size_mb_float / self.size_mb_huffman if self.size_mb_huffman else float("inf")

    def as_dict(self) -> dict:
        """Result keys for a trial report (units in the names)."""
        return {
            "size_mb": self.size_mb_huffman,
            "size_mb_huffman": self.size_mb_huffman,
            "size_mb_fixed": self.size_mb_fixed,
            "size_mb_float": self.size_mb_float,
            "compression_ratio": self.compression_ratio,
        }


def report_from_plan(p: Plan) -> SizeReport:
    """Size report of a laid-out compressed model (JASQ §3.4)."""
    float_bits = fixed_bits = 0
    num = quant = 0
    packed = sum(1 for e in p.entries if e.form == "packed")
    for e in p.entries:
        if e.dtype != "float32":
            continue
        n = e.q.symbols.size if e.q is not None else e.raw.size
        num += n
        float_bits += 32 * n
        if e.q is not None:
            quant += n
            fixed_bits += e.bits * n + 64 * e.q.num_buckets
        else:
            fixed_bits += 32 * n
    return SizeReport(
        size_mb_float=float_bits / 8 / MB,
        size_mb_fixed=fixed_bits / 8 / MB,
        size_mb_huffman=file_nbytes(p) / MB,
        num_values=num,
        num_quantized=quant,
        num_packed_tensors=packed,
    )


def size_report(items: Iterable[tuple[str, torch.Tensor, int]], bucket_size: int = 256) -> SizeReport:
    """Float, fixed-width and Huffman-coded sizes of ``(name, tensor, bits)`` items (JASQ §3.4).

    ``bits >= 32`` keeps a tensor as float32; integer tensors (e.g. batch-norm counters) are stored
    raw and count only toward the Huffman (file) size.
    """
    return report_from_plan(plan(items, bucket_size))


def quantize_with_size(
    items: Iterable[tuple[str, torch.Tensor, int]], bucket_size: int = 256
) -> tuple[dict[str, torch.Tensor], SizeReport]:
    """Quantize-dequantize every item and report the sizes, quantizing only once (JASQ §3.4).

    Returns:
        ``name -> float32 tensor`` (dequantized, or an unchanged copy for bits >= 32 / integer
        tensors) and the :class:`SizeReport`.
    """
    p = plan(items, bucket_size)
    out: dict[str, torch.Tensor] = {}
    for e in p.entries:
        if e.q is not None:
            out[e.name] = dequantize(e.q)
        else:
            out[e.name] = torch.from_numpy(e.raw.copy()).reshape(e.shape)
    return out, report_from_plan(p)


def fixed_bits_per_tensor(numel: int, bits: int, bucket_size: int = 256) -> int:
    """Bits of one tensor stored at fixed width: ``b`` per value + 64 per bucket, or 32 per value."""
    if bits >= FLOAT_BITS:
        return 32 * numel
    return bits * numel + 64 * (-(-numel // bucket_size))
