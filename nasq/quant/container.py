"""Byte layout of a compressed model file, shared by the size accounting and the exporter (JASQ §3.4).

A file is::

    MAGIC (8 bytes) | header length (uint32 LE) | header (zlib-compressed JSON)
    | per bit width b, ascending: Huffman table | block byte lengths (uint32 LE) | Huffman payload
    | per quantized tensor: bucket mins, bucket maxs (float32 LE)
    | per unquantized tensor: raw values (float32 LE, or the tensor's own integer dtype)
    | CRC-32 of everything before it (uint32 LE)

All tensors quantized to the same width share one canonical Huffman code, so the model carries at
most one table per width. :func:`plan` computes everything that goes into the file, and
:func:`file_nbytes` its exact length, so the reported Huffman size equals the file's length.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from nasq.errors import ConfigError
from nasq.quant import huffman
from nasq.quant.bucket import FLOAT_BITS, QuantizedTensor, check_bits, check_bucket_size, quantize_symbols

MAGIC = b"NASQZ\x00\x01\n"
FORMAT_VERSION = 1
TAIL_BYTES = 4  # CRC-32


@dataclass
class Entry:
    """One tensor of the model as it will be stored."""

    name: str
    shape: tuple[int, ...]
    bits: int  # 1..16 quantized; 32 kept raw
    dtype: str  # dtype of the restored tensor ("float32", "int64", ...)
    q: QuantizedTensor | None = None  # set when quantized
    raw: np.ndarray | None = None  # set when stored raw (little-endian)


@dataclass
class Group:
    """All symbols of one bit width, coded with one canonical Huffman code."""

    bits: int
    symbols: np.ndarray
    lengths: np.ndarray
    table: bytes
    payload_nbytes: int
    num_blocks: int


@dataclass
class Plan:
    """Everything a compressed file holds, before the Huffman payloads are written."""

    entries: list[Entry]
    groups: list[Group]
    bucket_size: int
    block_size: int
    header: bytes = field(default=b"")


def _entry(name: str, w: torch.Tensor, bits: int, bucket_size: int) -> Entry:
    if not isinstance(w, torch.Tensor):
        raise ConfigError(f"tensor {name!r} is a {type(w).__name__}, not a torch.Tensor")
    w = w.detach().cpu()
    shape = tuple(int(s) for s in w.shape)
    if not w.is_floating_point():
        raw = w.numpy().astype(w.numpy().dtype.newbyteorder("<"), copy=False)
        return Entry(name, shape, FLOAT_BITS, str(raw.dtype.name), raw=raw)
    bits = check_bits(bits)
    if bits >= FLOAT_BITS or w.numel() == 0:
        raw = w.to(torch.float32).numpy().astype("<f4")
        return Entry(name, shape, FLOAT_BITS, "float32", raw=raw)
    return Entry(name, shape, bits, "float32", q=quantize_symbols(w, bits, bucket_size))


def plan(
    items: Iterable[tuple[str, torch.Tensor, int]],
    bucket_size: int = 256,
    block_size: int = huffman.BLOCK_SIZE,
) -> Plan:
    """Quantize every ``(name, tensor, bits)`` item and lay out the compressed file (JASQ §3.4)."""
    bucket_size = check_bucket_size(bucket_size)
    entries: list[Entry] = []
    seen: set[str] = set()
    for name, w, bits in items:
        if name in seen:
            raise ConfigError(f"tensor name {name!r} appears twice; names must be unique")
        seen.add(name)
        entries.append(_entry(name, w, bits, bucket_size))
    groups = []
    for bits in sorted({e.bits for e in entries if e.q is not None}):
        symbols = np.concatenate([e.q.symbols for e in entries if e.q is not None and e.bits == bits])
        lengths = huffman.code_lengths(np.bincount(symbols, minlength=2**bits))
        groups.append(
            Group(
                bits,
                symbols,
                lengths,
                huffman.table_bytes(lengths),
                huffman.payload_nbytes(symbols, lengths, block_size),
                -(-len(symbols) // block_size),
            )
        )
    p = Plan(entries, groups, bucket_size, block_size)
    p.header = zlib.compress(json.dumps(header_dict(p), separators=(",", ":")).encode(), 9)
    return p


def header_dict(p: Plan) -> dict:
    """The JSON header: tensor names, shapes, bits and dtypes; bucket and block sizes; group sizes."""
    return {
        "format": "nasq-compressed",
        "version": FORMAT_VERSION,
        "bucket_size": p.bucket_size,
        "block_size": p.block_size,
        "tensors": [[e.name, list(e.shape), e.bits, e.dtype] for e in p.entries],
        "groups": [[g.bits, len(g.symbols), len(g.table), g.num_blocks, g.payload_nbytes] for g in p.groups],
    }


def file_nbytes(p: Plan) -> int:
    """Exact length in bytes of the file :func:`nasq.quant.export.write_plan` writes for ``p``."""
    n = len(MAGIC) + 4 + len(p.header) + TAIL_BYTES
    for g in p.groups:
        n += len(g.table) + 4 * g.num_blocks + g.payload_nbytes
    for e in p.entries:
        n += 8 * e.q.num_buckets if e.q is not None else e.raw.nbytes
    return n
