"""Bucketed uniform quantization of weights (JASQ §3.4).

A tensor is flattened and cut into buckets of ``k`` consecutive values (the last one may be
shorter). Each bucket is scaled to [0, 1] with its own min and max, rounded to the nearest of the
``2**b`` levels ``0, 1/(2**b-1), ..., 1`` and scaled back. The integer level of every value is the
*symbol* that the stored model keeps (later Huffman-coded, see :mod:`nasq.quant.huffman`), together
with the bucket's min and max as float32. A bucket whose values are all equal stores symbol 0.

Dequantization is ``min * (1 - t) + max * t`` with ``t = symbol / (2**b - 1)``: it returns the
bucket's min and max exactly at the two end levels. Bits of 32 or more mean "keep as float".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nasq.errors import ConfigError

FLOAT_BITS = 32  # bits >= this keep the tensor as float32
MAX_QUANT_BITS = 16  # widest quantized width supported (symbols fit in uint16)


@dataclass(frozen=True)
class QuantizedTensor:
    """The stored form of one bucket-quantized tensor (JASQ §3.4)."""

    symbols: np.ndarray  # uint16 levels, flattened, length = prod(shape)
    mins: np.ndarray  # float32 minimum of each bucket
    maxs: np.ndarray  # float32 maximum of each bucket
    shape: tuple[int, ...]  # original tensor shape
    bits: int  # bits per symbol, 1 .. 16
    bucket_size: int  # k, values per bucket

    @property
    def num_buckets(self) -> int:
        """Number of buckets (``ceil(numel / bucket_size)``)."""
        return len(self.mins)


def check_bits(bits: int) -> int:
    """Validate a bit width: 1..16 quantizes, 32 or more keeps float; return it as int."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ConfigError(f"bit width {bits!r} must be an integer in 1..{MAX_QUANT_BITS} or >= {FLOAT_BITS}")
    bits = int(bits)
    if not (1 <= bits <= MAX_QUANT_BITS or bits >= FLOAT_BITS):
        raise ConfigError(
            f"bit width {bits} is unsupported; use 1..{MAX_QUANT_BITS} bits, "
            f"or {FLOAT_BITS} to keep the tensor as float"
        )
    return bits


def check_bucket_size(bucket_size: int) -> int:
    """Validate the bucket size ``k`` (a positive integer)."""
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, (int, np.integer)) or bucket_size < 1:
        raise ConfigError(f"bucket size {bucket_size!r} must be a positive integer (JASQ uses 256)")
    return int(bucket_size)


def _buckets(w: torch.Tensor, bucket_size: int) -> tuple[torch.Tensor, int]:
    """Flattened float32 values as a (buckets, k) matrix; the last bucket is padded with its last value."""
    flat = w.detach().reshape(-1).to(torch.float32).cpu()
    n = flat.numel()
    pad = (-n) % bucket_size
    if pad:
        flat = torch.cat([flat, flat[-1:].expand(pad)])
    return flat.reshape(-1, bucket_size), n


def quantize_symbols(w: torch.Tensor, bits: int, bucket_size: int = 256) -> QuantizedTensor:
    """Quantize ``w`` per bucket to ``bits``-bit symbols plus bucket min/max (JASQ §3.4).

    Args:
        w: any real tensor (computed in float32).
        bits: bits per value, 1..16.
        bucket_size: ``k``, the number of consecutive values sharing one min/max.

    Returns:
        The symbols (uint16), bucket mins and maxs (float32) and the original shape.
    """
    bits, bucket_size = check_bits(bits), check_bucket_size(bucket_size)
    if bits >= FLOAT_BITS:
        raise ConfigError(f"bit width {bits} keeps the tensor as float; there are no symbols to make")
    if w.numel() == 0:
        raise ConfigError("cannot quantize an empty tensor")
    if not bool(torch.isfinite(w).all()):
        raise ConfigError("cannot quantize a tensor with NaN or infinite values; check the training run")
    mat, n = _buckets(w, bucket_size)
    lo = mat.amin(dim=1, keepdim=True)
    hi = mat.amax(dim=1, keepdim=True)
    span = hi - lo
    levels = float(2**bits - 1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    scaled = torch.where(span > 0, (mat - lo) / safe, torch.zeros_like(mat))
    sym = torch.round(scaled * levels).clamp_(0, levels)
    symbols = sym.reshape(-1)[:n].to(torch.int32).numpy().astype(np.uint16)
    return QuantizedTensor(
        symbols=symbols,
        mins=lo.reshape(-1).numpy().copy(),
        maxs=hi.reshape(-1).numpy().copy(),
        shape=tuple(w.shape),
        bits=bits,
        bucket_size=bucket_size,
    )


def dequantize(q: QuantizedTensor) -> torch.Tensor:
    """Rebuild the float32 tensor from symbols and bucket min/max (JASQ §3.4)."""
    n = int(np.prod(q.shape, dtype=np.int64))
    nb = len(q.mins)
    k = q.bucket_size
    if len(q.symbols) != n or nb != -(-n // k) or len(q.maxs) != nb:
        raise ConfigError(
            f"quantized tensor of shape {q.shape} has {len(q.symbols)} symbols and "
            f"{nb} buckets; they do not match bucket size {k}"
        )
    sym = torch.from_numpy(q.symbols.astype(np.float32))
    pad = nb * k - n
    if pad:
        sym = torch.cat([sym, torch.zeros(pad)])
    t = sym.reshape(nb, k) / float(2**q.bits - 1)
    lo = torch.from_numpy(np.array(q.mins, dtype=np.float32)).reshape(-1, 1)
    hi = torch.from_numpy(np.array(q.maxs, dtype=np.float32)).reshape(-1, 1)
    out = lo * (1.0 - t) + hi * t
    return out.reshape(-1)[:n].reshape(q.shape).contiguous()


def quantize_dequantize(w: torch.Tensor, bits: int, bucket_size: int = 256) -> torch.Tensor:
    """Quantize and dequantize ``w`` (JASQ §3.4); bits >= 32 returns a float32 copy unchanged.

    The result has ``w``'s shape and dtype float32, and equals ``dequantize(quantize_symbols(w))``
    bit for bit.
    """
    bits = check_bits(bits)
    if bits >= FLOAT_BITS or w.numel() == 0:
        return w.detach().to(torch.float32).clone()
    return dequantize(quantize_symbols(w, bits, bucket_size)).to(w.device)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of ``count`` symbols packed at ``bits`` bits each, rounded up to a whole byte (JASQ §3.4)."""
    return -(-count * bits // 8)


def pack_symbols(symbols: np.ndarray, bits: int) -> bytes:
    """Fixed-width form of a tensor's symbols: each one as ``bits`` bits, MSB first, concatenated."""
    sym = np.asarray(symbols, dtype=np.uint16)
    if bits == 8:
        return sym.astype(np.uint8).tobytes()
    if bits == 16:
        return sym.astype(">u2").tobytes()
    planes = np.unpackbits(sym.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)
    return np.packbits(planes[:, 16 - bits :].reshape(-1)).tobytes()


def unpack_symbols(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_symbols`: ``count`` uint16 symbols of ``bits`` bits each."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) != packed_nbytes(count, bits):
        raise ValueError(f"packed data has {len(buf)} bytes, expected {packed_nbytes(count, bits)}")
    if bits == 8:
        return buf.astype(np.uint16)
    if bits == 16:
        return buf.view(">u2").astype(np.uint16)
    planes = np.zeros((count, 16), dtype=np.uint8)
    planes[:, 16 - bits :] = np.unpackbits(buf)[: count * bits].reshape(count, bits)
    return np.packbits(planes, axis=1).view(">u2").reshape(-1).astype(np.uint16)
