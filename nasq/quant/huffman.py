"""Canonical Huffman coding of quantized weight symbols (JASQ §3.4, "Huffman coding").

The code is canonical, so its table is just one code length per symbol of the alphabet
``0 .. 2**bits - 1`` (0 = unused), stored zlib-compressed. The symbol stream is cut into blocks of
``block_size`` symbols; every block starts on a byte boundary and the byte length of each block is
stored, so decoding runs all blocks in lockstep with numpy instead of one Python step per symbol.

Written here rather than taken from PyPI: the pure-Python coders there (e.g. ``dahuffman``) encode
and decode one symbol per Python call and keep their code table as a pickled dict, which is too slow
for millions of weights and leaves the table's stored size undefined; the size accounting needs
exactly the bytes this module writes.
"""

from __future__ import annotations

import heapq
import zlib

import numpy as np

from nasq.errors import CheckpointError

BLOCK_SIZE = 8192  # symbols per independently decodable, byte-aligned block
MAX_CODE_LENGTH = 57  # a code plus a 7-bit misalignment must fit in one 64-bit window


def code_lengths(freqs: np.ndarray) -> np.ndarray:
    """Huffman code length of every symbol from its frequency (0 for unused symbols).

    Built with a binary heap (ties broken by node id, so the result is deterministic); a lone
    used symbol gets length 1.

    Args:
        freqs: non-negative counts, one per symbol of the alphabet.

    Returns:
        uint8 array of code lengths, same length as ``freqs``.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    used = np.flatnonzero(freqs > 0)
    lengths = np.zeros(len(freqs), dtype=np.uint8)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    n = len(used)
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    heap = [(int(f), i) for i, f in enumerate(freqs[used])]
    heapq.heapify(heap)
    nxt = n
    while len(heap) > 1:
        wa, a = heapq.heappop(heap)
        wb, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (wa + wb, nxt))
        nxt += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    for node in range(2 * n - 3, -1, -1):  # internal nodes are created after their children
        depth[node] = depth[parent[node]] + 1
    if depth[:n].max() > MAX_CODE_LENGTH:
        raise ValueError(f"Huffman code longer than {MAX_CODE_LENGTH} bits")
    lengths[used] = depth[:n]
    return lengths


def _canonical(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Canonical codes per symbol, plus (first code, count, offset) per length 0..L."""
    lengths = np.asarray(lengths, dtype=np.int64)
    top = int(lengths.max()) if len(lengths) else 0
    count = np.bincount(lengths, minlength=top + 1)
    count[0] = 0
    first = np.zeros(top + 1, dtype=np.int64)
    for length in range(1, top + 1):
        first[length] = (first[length - 1] + count[length - 1]) << 1
    offset = np.concatenate([[0], np.cumsum(count)[:-1]])
    order = np.lexsort((np.arange(len(lengths)), lengths))  # by (length, symbol)
    order = order[lengths[order] > 0]
    rank = np.zeros(len(lengths), dtype=np.int64)
    rank[order] = np.arange(len(order)) - offset[lengths[order]]
    codes = np.where(lengths > 0, first[lengths] + rank, 0).astype(np.uint64)
    return codes, first, count, offset


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman code (as an integer, ``lengths[s]`` bits wide) of every symbol ``s``."""
    return _canonical(lengths)[0]


def payload_nbytes(symbols: np.ndarray, lengths: np.ndarray, block_size: int = BLOCK_SIZE) -> int:
    """Bytes :func:`encode` writes for ``symbols``: each block's code bits rounded up to whole bytes."""
    if len(symbols) == 0:
        return 0
    lens = np.asarray(lengths, dtype=np.int64)[symbols]
    block_bits = np.add.reduceat(lens, np.arange(0, len(symbols), block_size))
    return int(((block_bits + 7) // 8).sum())


def encode(
    symbols: np.ndarray, lengths: np.ndarray, block_size: int = BLOCK_SIZE
) -> tuple[bytes, np.ndarray]:
    """Huffman-encode ``symbols`` with the canonical code of ``lengths``.

    Returns:
        The payload bytes and the byte length of each block (uint32).
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(symbols) == 0:
        return b"", np.zeros(0, dtype=np.uint32)
    table = canonical_codes(lengths)
    widths = np.asarray(lengths, dtype=np.int64)
    if (widths[symbols] == 0).any():
        raise ValueError("a symbol to encode has no Huffman code")
    chunks, sizes = [], []
    step = block_size * _BLOCKS_PER_CHUNK
    for lo in range(0, len(symbols), step):
        payload, block_bytes = _encode_blocks(symbols[lo : lo + step], table, widths, block_size)
        chunks.append(payload)
        sizes.append(block_bytes)
    return b"".join(chunks), np.concatenate(sizes).astype(np.uint32)


_BLOCKS_PER_CHUNK = 32  # bounds the 64-bytes-per-symbol scratch of _encode_blocks


def _encode_blocks(
    symbols: np.ndarray, table: np.ndarray, widths: np.ndarray, block_size: int
) -> tuple[bytes, np.ndarray]:
    """Encode whole blocks: every code left-aligned in 64 bits, unpacked, and the used bits kept.

    A zero code as wide as the block's padding ends each block, so blocks stay byte-aligned.
    """
    lens = widths[symbols]
    starts = np.arange(0, len(symbols), block_size)
    pad = -np.add.reduceat(lens, starts) % 8
    ends = np.append(starts[1:], len(symbols))
    codes = np.insert(table[symbols], ends, np.uint64(0))
    lens = np.insert(lens, ends, pad)
    left = np.where(lens > 0, codes << (64 - lens).astype(np.uint64), np.uint64(0))
    bits = np.unpackbits(left.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    bits = bits[np.arange(64) < lens[:, None]]
    block_bytes = (np.add.reduceat(lens, starts + np.arange(len(starts)))) // 8
    return np.packbits(bits).tobytes(), block_bytes


def decode(
    payload: bytes, block_bytes: np.ndarray, lengths: np.ndarray, count: int, block_size: int = BLOCK_SIZE
) -> np.ndarray:
    """Decode ``count`` symbols written by :func:`encode`; raise ``CheckpointError`` on bad data."""
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    lengths = np.asarray(lengths, dtype=np.int64)
    codes, first, cnt, offset = _canonical(lengths)
    top = len(first) - 1
    nblocks = -(-count // block_size)
    if top < 1 or top > MAX_CODE_LENGTH or len(block_bytes) != nblocks:
        raise CheckpointError(
            "Huffman table or block index does not match the stored symbol count; "
            "the file is corrupt, export it again"
        )
    limit = ((first[1:] + cnt[1:]) << (top - np.arange(1, top + 1))).astype(np.uint64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    buf = np.frombuffer(payload, dtype=np.uint8)
    buf = np.concatenate([buf, np.zeros(8, dtype=np.uint8)])
    ends = np.cumsum(block_bytes.astype(np.int64)) * 8
    pos = np.concatenate([[0], ends[:-1]])
    out = np.zeros(nblocks * block_size, dtype=np.int64)
    last = count - (nblocks - 1) * block_size
    for i in range(block_size):
        live = nblocks if i < last else nblocks - 1
        if live == 0:
            break
        p = pos[:live]
        win = buf[(p >> 3)[:, None] + np.arange(8)].view(">u8").reshape(-1).astype(np.uint64)
        v = (win << (p & 7).astype(np.uint64)) >> np.uint64(64 - top)
        length = np.searchsorted(limit, v, side="right") + 1
        length = np.minimum(length, top)
        idx = offset[length] + (v >> (top - length).astype(np.uint64)).astype(np.int64) - first[length]
        if (idx < 0).any() or (idx >= len(order)).any():
            raise CheckpointError("invalid Huffman code in the payload; the file is corrupt, export it again")
        out[np.arange(live) * block_size + i] = order[idx]
        pos[:live] = p + length
    if (pos > ends).any():
        raise CheckpointError("Huffman payload overruns its blocks; the file is corrupt, export it again")
    return out.reshape(nblocks, block_size).reshape(-1)[:count].astype(np.uint16)


def table_bytes(lengths: np.ndarray) -> bytes:
    """The stored code table: the uint8 code lengths of the whole alphabet, zlib-compressed."""
    return zlib.compress(np.asarray(lengths, dtype=np.uint8).tobytes(), 9)


def lengths_from_table(data: bytes, alphabet: int) -> np.ndarray:
    """Inverse of :func:`table_bytes`; raise ``CheckpointError`` when the table is unusable."""
    try:
        raw = zlib.decompress(data)
    except zlib.error as exc:
        raise CheckpointError(
            f"Huffman table cannot be read ({exc}); the file is corrupt, export it again"
        ) from exc
    lengths = np.frombuffer(raw, dtype=np.uint8)
    if len(lengths) != alphabet:
        raise CheckpointError(
            f"Huffman table has {len(lengths)} entries, expected {alphabet}; "
            "the file is corrupt, export it again"
        )
    kraft = np.sum(np.ldexp(1.0, -lengths[lengths > 0].astype(np.int64)))
    if lengths.max(initial=0) > MAX_CODE_LENGTH or kraft > 1.0 + 1e-9:
        raise CheckpointError("Huffman table is not a prefix code; the file is corrupt, export it again")
    return lengths.astype(np.uint8)
