"""Bucketed quantizer (JASQ §3.4): levels, end points, error bound, bucket boundaries, round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.errors import ConfigError
from nasq.quant.bucket import dequantize, quantize_dequantize, quantize_symbols


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_levels_count_and_end_points(bits: int) -> None:
    w = torch.linspace(-1.3, 2.7, 4096)
    out = quantize_dequantize(w, bits, bucket_size=4096)
    values = torch.unique(out)
    # a dense ramp hits every level: exactly 2**b of them (an off-by-one quantizer fails here)
    assert len(values) == 2**bits
    assert out.min().item() == w.min().item() and out.max().item() == w.max().item()
    step = (w.max() - w.min()).item() / (2**bits - 1)
    gaps = torch.diff(values)
    assert torch.allclose(gaps, torch.full_like(gaps, step), rtol=1e-4)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_error_bound_and_symbol_range(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(3, 5, 7, 11, generator=g) * 0.1
    q = quantize_symbols(w, bits, bucket_size=64)
    assert q.symbols.max() <= 2**bits - 1
    out = dequantize(q)
    assert out.shape == w.shape
    flat, back = w.reshape(-1), out.reshape(-1)
    for b in range(q.num_buckets):
        chunk = slice(b * 64, (b + 1) * 64)
        lo, hi = flat[chunk].min().item(), flat[chunk].max().item()
        bound = (hi - lo) / (2 * (2**bits - 1))
        assert (back[chunk] - flat[chunk]).abs().max().item() <= bound * (1 + 1e-4) + 1e-7
        assert len(torch.unique(back[chunk])) <= 2**bits
        assert back[chunk].min().item() == lo and back[chunk].max().item() == hi


def test_bucket_boundaries_at_k() -> None:
    # values 0..9 then 100..109 with k = 10: each bucket has its own min/max
    w = torch.cat([torch.arange(10.0), torch.arange(100.0, 110.0), torch.tensor([5.0, 6.0, 7.0])])
    q = quantize_symbols(w, 2, bucket_size=10)
    assert q.num_buckets == 3
    assert q.mins.tolist() == [0.0, 100.0, 5.0] and q.maxs.tolist() == [9.0, 109.0, 7.0]
    out = dequantize(q)
    assert out[:10].max().item() == 9.0 and out[10:20].min().item() == 100.0
    # with k = 11 the first bucket spans 0..9 and 100: its levels are 0, 33.33, 66.67, 100
    out11 = quantize_dequantize(w, 2, bucket_size=11)
    assert out11[10].item() == 100.0 and out11[9].item() == 0.0


def test_constant_bucket_and_float_passthrough() -> None:
    w = torch.full((300,), 0.25)
    q = quantize_symbols(w, 4, bucket_size=256)
    assert (q.symbols == 0).all()
    assert torch.equal(dequantize(q), w)
    x = torch.randn(17)
    assert torch.equal(quantize_dequantize(x, 32), x)
    assert torch.equal(quantize_dequantize(x, 64), x)


def test_symbols_round_trip_is_bit_exact() -> None:
    w = torch.randn(1000, dtype=torch.float64) * 3
    for bits in (3, 8, 16):
        a = quantize_dequantize(w, bits, bucket_size=100)
        b = dequantize(quantize_symbols(w, bits, bucket_size=100))
        assert a.dtype == torch.float32 and torch.equal(a, b)
        assert np.array_equal(a.numpy().view(np.uint32), b.numpy().view(np.uint32))


@pytest.mark.parametrize("bits", [0, 17, 31, -4, 2.5, True])
def test_bad_bits_rejected(bits) -> None:
    with pytest.raises(ConfigError):
        quantize_dequantize(torch.randn(5), bits)


def test_bad_input_rejected() -> None:
    with pytest.raises(ConfigError):
        quantize_symbols(torch.randn(5), 4, bucket_size=0)
    with pytest.raises(ConfigError):
        quantize_symbols(torch.tensor([1.0, float("nan")]), 4)
