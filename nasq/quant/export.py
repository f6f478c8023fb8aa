"""Compressed model files: write a bucket-quantized, Huffman-coded state dict and load it back (JASQ §3.4).

The layout is described in :mod:`nasq.quant.container`. ``load_compressed`` returns exactly
``quantize_dequantize`` of the exported tensors (bit for bit), and the :class:`SizeReport` returned
by ``export_model`` has ``size_mb_huffman`` equal to the file's length on disk.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from nasq.errors import CheckpointError, bad_state
from nasq.quant import huffman
from nasq.quant.bucket import (
    FLOAT_BITS,
    QuantizedTensor,
    dequantize,
    pack_symbols,
    packed_nbytes,
    unpack_symbols,
)
from nasq.quant.container import FORMAT_VERSION, MAGIC, TAIL_BYTES, Plan, plan
from nasq.quant.size import MB, SizeReport, report_from_plan

READABLE_VERSIONS = (1, FORMAT_VERSION)  # version 1: every quantized tensor Huffman-coded, no flag


def export_model(
    state_dict: Mapping[str, torch.Tensor],
    bits_per_tensor: Mapping[str, int],
    path: str | Path,
    bucket_size: int = 256,
) -> SizeReport:
    """Write ``state_dict`` quantized with ``bits_per_tensor`` to a compressed file (JASQ §3.4).

    Args:
        state_dict: tensors to store (floating tensors missing from ``bits_per_tensor`` stay float32;
            integer tensors are stored raw).
        bits_per_tensor: ``name -> bits`` (1..16, or >= 32 for float).
        path: output file; written atomically.
        bucket_size: values per quantization bucket.

    Returns:
        The size report; ``size_mb_huffman * 2**20`` equals ``os.path.getsize(path)``.
    """
    unknown = sorted(set(bits_per_tensor) - set(state_dict))
    if unknown:
        raise CheckpointError(
            f"bit policy names tensors not in the model: {unknown[:5]}; "
            "check the genome or --bits-policy against the model"
        )
    items = [(k, v, int(bits_per_tensor.get(k, FLOAT_BITS))) for k, v in state_dict.items()]
    p = plan(items, bucket_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        write_plan(p, f)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    report = report_from_plan(p)
    on_disk = os.path.getsize(path) / MB
    if on_disk != report.size_mb_huffman:  # internal invariant: the size accounting is the file length
        raise AssertionError(f"file is {on_disk} MB but the plan says {report.size_mb_huffman} MB")
    return report


def write_plan(p: Plan, f) -> None:
    """Write the compressed file of a plan to the binary stream ``f``."""
    chunks: list[bytes] = [MAGIC, struct.pack("<I", len(p.header)), p.header]
    for g in p.groups:
        payload, block_bytes = huffman.encode(g.symbols, g.lengths, p.block_size)
        chunks += [g.table, block_bytes.astype("<u4").tobytes(), payload]
    for e in p.entries:
        if e.q is not None and not e.huffman:
            chunks.append(pack_symbols(e.q.symbols, e.bits))
    for e in p.entries:
        if e.q is not None:
            chunks += [e.q.mins.astype("<f4").tobytes(), e.q.maxs.astype("<f4").tobytes()]
    for e in p.entries:
        if e.q is None:
            chunks.append(e.raw.tobytes())
    crc = 0
    for c in chunks:
        crc = zlib.crc32(c, crc)
        f.write(c)
    f.write(struct.pack("<I", crc))


class _Reader:
    """Sequential reader over the file body that reports truncation as a CheckpointError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(bad_state(self.path, "the file is truncated", "export the model again"))
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _read_header(path: Path, data: bytes) -> tuple[dict, _Reader]:
    if len(data) < len(MAGIC) + 4 + TAIL_BYTES or not data.startswith(MAGIC):
        raise CheckpointError(
            bad_state(path, "not a nasq compressed model file", "pass a file written by `nasq export`")
        )
    body, (crc,) = data[:-TAIL_BYTES], struct.unpack("<I", data[-TAIL_BYTES:])
    if zlib.crc32(body) != crc:
        raise CheckpointError(
            bad_state(path, "checksum mismatch (corrupt or truncated file)", "export the model again")
        )
    r = _Reader(body, path)
    r.take(len(MAGIC))
    (hlen,) = struct.unpack("<I", r.take(4))
    try:
        header = json.loads(zlib.decompress(r.take(hlen)))
    except (zlib.error, ValueError) as exc:
        raise CheckpointError(
            bad_state(path, f"unreadable header ({exc})", "export the model again")
        ) from exc
    if header.get("format") != "nasq-compressed" or header.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            bad_state(
                path,
                f"unsupported format/version {header.get('version')!r}",
                f"export it again with this nasq (format version {FORMAT_VERSION})",
            )
        )
    return header, r


def load_compressed(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a file written by :func:`export_model` as a state dict of dequantized tensors (JASQ §3.4).

    Raises:
        CheckpointError: the file is missing, foreign, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(bad_state(path, "file not found", "check the path of the compressed model"))
    header, r = _read_header(path, path.read_bytes())
    try:
        return _decode_body(header, r)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            bad_state(path, f"inconsistent contents ({exc})", "export the model again")
        ) from exc


def _tensor_forms(header: dict) -> list[tuple[str, list, int, str, str]]:
    """``(name, shape, bits, dtype, form)`` of every tensor, form ``"huffman"``, ``"packed"`` or ``"raw"``.

    Version 2 stores a Huffman flag (1 or 0) per tensor; version 1 Huffman-coded every quantized one.
    """
    rows = []
    for t in header["tensors"]:
        name, shape, bits, dtype, *rest = t
        flag = rest[0] if rest else int(bits < FLOAT_BITS)
        if len(rest) != (header["version"] != 1) or flag not in (0, 1) or (bits >= FLOAT_BITS and flag):
            raise CheckpointError(
                f"tensor {name!r} has a bad Huffman flag {rest!r}; the file is corrupt, export it again"
            )
        form = "raw" if bits >= FLOAT_BITS else ("huffman" if flag else "packed")
        rows.append((name, shape, int(bits), dtype, form))
    return rows


def _decode_body(header: dict, r: _Reader) -> dict[str, torch.Tensor]:
    k, block = int(header["bucket_size"]), int(header["block_size"])
    tensors = _tensor_forms(header)
    streams: dict[int, np.ndarray] = {}
    for bits, count, tlen, nblocks, plen in header["groups"]:
        lengths = huffman.lengths_from_table(r.take(tlen), 2**bits)
        block_bytes = np.frombuffer(r.take(4 * nblocks), dtype="<u4")
        streams[bits] = huffman.decode(r.take(plen), block_bytes, lengths, count, block)
    packed = {}
    for name, shape, bits, _, form in tensors:
        if form == "packed":
            n = int(np.prod(shape, dtype=np.int64))
            packed[name] = unpack_symbols(r.take(packed_nbytes(n, bits)), bits, n)
    used = {b: 0 for b in streams}
    out: dict[str, torch.Tensor] = {}
    for name, shape, bits, _, form in tensors:
        if form == "raw":
            continue
        n = int(np.prod(shape, dtype=np.int64))
        nb = -(-n // k)
        mins = np.frombuffer(r.take(4 * nb), dtype="<f4")
        maxs = np.frombuffer(r.take(4 * nb), dtype="<f4")
        if form == "packed":
            sym = packed[name]
        else:
            sym = streams[bits][used[bits] : used[bits] + n]
            used[bits] += n
        if len(sym) != n:
            raise CheckpointError(f"tensor {name!r} needs {n} symbols; the file is corrupt, export it again")
        out[name] = dequantize(QuantizedTensor(sym, mins, maxs, tuple(shape), bits, k))
    for name, shape, bits, dtype, form in tensors:
        if form == "raw":
            dt = np.dtype(dtype).newbyteorder("<")
            n = int(np.prod(shape, dtype=np.int64))
            raw = np.frombuffer(r.take(n * dt.itemsize), dtype=dt).astype(np.dtype(dtype))
            out[name] = torch.from_numpy(raw.copy()).reshape(shape)
    if r.pos != len(r.data):
        raise CheckpointError("trailing bytes after the last tensor; the file is corrupt, export it again")
    return {name: out[name] for name, *_ in tensors}
