"""Byte layout of a compressed model file, shared by the size accounting and the exporter (JASQ §3.4).

A file is::

    MAGIC (8 bytes) | header length (uint32 LE) | header (zlib-compressed JSON)
    | per bit width b with Huffman-coded tensors, ascending: Huffman table | block byte lengths
      (uint32 LE) | Huffman payload
    | per packed tensor: its symbols at b bits each, MSB first, padded to a whole byte
    | per quantized tensor: bucket mins, bucket maxs (float32 LE)
    | per unquantized tensor: raw values (float32 LE, or the tensor's own integer dtype)
    | CRC-32 of everything before it (uint32 LE)

Each quantized tensor is stored in whichever form is smaller, Huffman-coded (header flag 1) or
packed at ``b`` bits (flag 0; unquantized tensors also carry 0). The Huffman-coded tensors of one
width share one canonical code, so the model carries at most one table per width; on small
tensors that table costs more than the coding saves, and :func:`choose_forms` then packs them.
:func:`plan` computes everything that goes into the file, and :func:`file_nbytes` its exact length,
so the reported size equals the file's length. Version 1 files (every quantized tensor
Huffman-coded, no flag) still load.
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
from nasq.quant.bucket import (
    FLOAT_BITS,
    QuantizedTensor,
    check_bits,
    check_bucket_size,
    packed_nbytes,
    quantize_symbols,
)

MAGIC = b"NASQZ\x00\x01\n"
FORMAT_VERSION = 2  # 2: per-tensor "huffman" / "packed" / "raw" flag; 1: all quantized tensors Huffman
TAIL_BYTES = 4  # CRC-32
CODINGS = ("best", "huffman", "packed")  # plan(coding=...): per-tensor choice, or one form for all


@dataclass
class Entry:
    """One tensor of the model as it will be stored."""

    name: str
    shape: tuple[int, ...]
    bits: int  # 1..16 quantized; 32 kept raw
    dtype: str  # dtype of the restored tensor ("float32", "int64", ...)
    q: QuantizedTensor | None = None  # set when quantized
    raw: np.ndarray | None = None  # set when stored raw (little-endian)
    huffman: bool = True  # quantized only: Huffman-coded (True) or packed at ``bits`` bits (False)

    @property
    def form(self) -> str:
        """The header flag: ``"huffman"``, ``"packed"`` or ``"raw"``."""
        if self.q is None:
            return "raw"
        return "huffman" if self.huffman else "packed"


@dataclass
class Group:
    """The Huffman-coded symbols of one bit width, coded with one canonical Huffman code."""

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


def _group(bits: int, coded: list[Entry], block_size: int) -> Group:
    symbols = np.concatenate([e.q.symbols for e in coded])
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=2**bits))
    table = huffman.table_bytes(lengths)
    nbytes = huffman.payload_nbytes(symbols, lengths, block_size)
    return Group(bits, symbols, lengths, table, nbytes, -(-len(symbols) // block_size))


def _group_cost(g: Group | None) -> int:
    return 0 if g is None else len(g.table) + 4 * g.num_blocks + g.payload_nbytes


def choose_forms(
    members: list[Entry], bits: int, block_size: int = huffman.BLOCK_SIZE
) -> tuple[Group | None, Group]:
    """Set ``huffman`` on the quantized tensors of one width so their stored bytes are smallest (JASQ §3.4).

    Starts with all of them Huffman-coded; each round packs every tensor whose bytes under the
    current shared code (plus its share of the block index) are not below its packed bytes, and
    rebuilds the code from the rest. The set shrinks every round, so at most ``len(members)``
    rounds run. The exact cost of every state, and of packing all, is compared, so the result is
    never larger than all-Huffman or all-packed.

    Returns:
        The chosen state's group (``None``: all packed, no table) and the all-Huffman group.
    """
    counts = [np.bincount(e.q.symbols, minlength=2**bits) for e in members]
    n = np.array([e.q.symbols.size for e in members], dtype=np.int64)
    packed = np.array([packed_nbytes(int(c), bits) for c in n], dtype=np.int64)
    keep = np.ones(len(members), dtype=bool)
    best_cost, best_keep, best_group, all_group = int(packed.sum()), ~keep, None, None
    for _ in range(len(members)):
        coded = [e for e, k in zip(members, keep) if k]
        g = _group(bits, coded, block_size)
        all_group = all_group or g
        cost = _group_cost(g) + int(packed[~keep].sum())
        if cost < best_cost:
            best_cost, best_keep, best_group = cost, keep.copy(), g
        code_bytes = np.array([c @ g.lengths.astype(np.int64) for c in counts]) / 8 + 4 * n / block_size
        keep = keep & (code_bytes < packed)
        if not keep.any() or len(coded) == int(keep.sum()):
            break
    for e, k in zip(members, best_keep):
        e.huffman = bool(k)
    return best_group, all_group


def _finish(entries: list[Entry], groups: list[Group], bucket_size: int, block_size: int) -> Plan:
    p = Plan(entries, groups, bucket_size, block_size)
    p.header = zlib.compress(json.dumps(header_dict(p), separators=(",", ":")).encode(), 9)
    return p


def _with_forms(entries: list[Entry], huffman_coded: bool) -> list[Entry]:
    return [Entry(e.name, e.shape, e.bits, e.dtype, e.q, e.raw, huffman_coded) for e in entries]


def _widths(entries: list[Entry]) -> list[tuple[int, list[Entry]]]:
    widths = sorted({e.bits for e in entries if e.q is not None})
    return [(b, [e for e in entries if e.q is not None and e.bits == b]) for b in widths]


def plan(
    items: Iterable[tuple[str, torch.Tensor, int]],
    bucket_size: int = 256,
    block_size: int = huffman.BLOCK_SIZE,
    coding: str = "best",
) -> Plan:
    """Quantize every ``(name, tensor, bits)`` item and lay out the compressed file (JASQ §3.4).

    ``coding="best"`` stores each tensor in its smaller form (see :func:`choose_forms`) and the
    file is never longer than with ``"huffman"`` (all Huffman-coded) or ``"packed"`` (all packed).
    """
    if coding not in CODINGS:
        raise ConfigError(f"coding {coding!r} is unknown; use one of {', '.join(CODINGS)}")
    bucket_size = check_bucket_size(bucket_size)
    entries: list[Entry] = []
    seen: set[str] = set()
    for name, w, bits in items:
        if name in seen:
            raise ConfigError(f"tensor name {name!r} appears twice; names must be unique")
        seen.add(name)
        entries.append(_entry(name, w, bits, bucket_size))
    all_packed = _finish(_with_forms(entries, False), [], bucket_size, block_size)
    if coding == "packed":
        return all_packed
    if coding == "huffman":
        groups = [_group(b, members, block_size) for b, members in _widths(entries)]
        return _finish(entries, groups, bucket_size, block_size)
    chosen, all_coded = [], []
    for b, members in _widths(entries):
        g, g_all = choose_forms(members, b, block_size)
        chosen += [g] if g is not None else []
        all_coded.append(g_all)
    candidates = [  # the headers differ by a few bytes: compare whole files exactly
        _finish(entries, chosen, bucket_size, block_size),
        _finish(_with_forms(entries, True), all_coded, bucket_size, block_size),
        all_packed,
    ]
    return min(candidates, key=file_nbytes)


def header_dict(p: Plan) -> dict:
    """The JSON header: tensor names, shapes, bits, dtypes, Huffman flags; bucket and block sizes; groups.

    The flag is 1 for a Huffman-coded tensor, 0 for a packed or raw one (raw: bits >= 32).
    """
    return {
        "format": "nasq-compressed",
        "version": FORMAT_VERSION,
        "bucket_size": p.bucket_size,
        "block_size": p.block_size,
        "tensors": [[e.name, list(e.shape), e.bits, e.dtype, int(e.form == "huffman")] for e in p.entries],
        "groups": [[g.bits, len(g.symbols), len(g.table), g.num_blocks, g.payload_nbytes] for g in p.groups],
    }


def file_nbytes(p: Plan) -> int:
    """Exact length in bytes of the file :func:`nasq.quant.export.write_plan` writes for ``p``."""
    n = len(MAGIC) + 4 + len(p.header) + TAIL_BYTES + sum(_group_cost(g) for g in p.groups)
    for e in p.entries:
        if e.q is None:
            n += e.raw.nbytes
        else:
            n += 8 * e.q.num_buckets + (0 if e.huffman else packed_nbytes(e.q.symbols.size, e.bits))
    return n
