"""Size accounting and Huffman coding (JASQ §3.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.errors import CheckpointError
from nasq.quant import huffman
from nasq.quant.container import plan
from nasq.quant.size import MB, fixed_bits_per_tensor, quantize_with_size, size_report


def test_fixed_and_float_sizes_by_hand() -> None:
    a = torch.randn(1000)  # 4 buckets of 256 at 4 bits
    b = torch.randn(10, 10)  # kept float
    c = torch.randn(256)  # 1 bucket at 8 bits
    r = size_report([("a", a, 4), ("b", b, 32), ("c", c, 8)], bucket_size=256)
    assert r.size_mb_float == (1000 + 100 + 256) * 4 / MB
    fixed_bits = (1000 * 4 + 4 * 64) + 100 * 32 + (256 * 8 + 1 * 64)
    assert r.size_mb_fixed == fixed_bits / 8 / MB
    assert fixed_bits_per_tensor(1000, 4) == 1000 * 4 + 4 * 64
    assert r.num_values == 1356 and r.num_quantized == 1256


def _entropy_bits(symbols: np.ndarray) -> float:
    p = np.bincount(symbols) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * len(symbols))


def test_huffman_beats_fixed_on_skewed_data_and_respects_entropy() -> None:
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.laplace(0, 0.05, 200_000).astype(np.float32))
    for bits in (4, 8):
        r = size_report([("w", w, bits)], bucket_size=256)
        assert r.size_mb_huffman < r.size_mb_fixed
        p = plan([("w", w, bits)], 256)
        g = p.groups[0]
        assert g.payload_nbytes * 8 >= _entropy_bits(g.symbols)  # no code beats the entropy
        assert g.payload_nbytes * 8 <= _entropy_bits(g.symbols) + len(g.symbols) + 8 * g.num_blocks


def test_huffman_lengths_known_case() -> None:
    # frequencies 1,1,2,4: optimal lengths 3,3,2,1
    lengths = huffman.code_lengths(np.array([1, 1, 2, 4, 0]))
    assert lengths.tolist() == [3, 3, 2, 1, 0]
    codes = huffman.canonical_codes(lengths)
    assert [int(c) for c in codes[:4]] == [0b110, 0b111, 0b10, 0b0]
    assert huffman.code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0]


@pytest.mark.parametrize("n", [1, 5, 8191, 8192, 20001])
def test_huffman_encode_decode_round_trip(n: int) -> None:
    rng = np.random.default_rng(n)
    s = np.clip(np.round(rng.normal(40, 9, n)), 0, 255).astype(np.int64)
    lengths = huffman.code_lengths(np.bincount(s, minlength=256))
    payload, blocks = huffman.encode(s, lengths)
    assert len(payload) == huffman.payload_nbytes(s, lengths)
    table = huffman.lengths_from_table(huffman.table_bytes(lengths), 256)
    assert np.array_equal(huffman.decode(payload, blocks, table, n), s)


def test_bad_huffman_table_rejected() -> None:
    with pytest.raises(CheckpointError):
        huffman.lengths_from_table(b"garbage", 16)
    with pytest.raises(CheckpointError):
        huffman.lengths_from_table(huffman.table_bytes(np.ones(16, dtype=np.uint8)), 16)  # Kraft sum 8


def test_quantize_with_size_matches_separate_calls() -> None:
    w = torch.randn(3000)
    out, r = quantize_with_size([("w", w, 4), ("n", torch.tensor(3), 32)])
    from nasq.quant.bucket import quantize_dequantize

    assert torch.equal(out["w"], quantize_dequantize(w, 4))
    assert out["n"].item() == 3 and out["n"].dtype == torch.int64
    assert r == size_report([("w", w, 4), ("n", torch.tensor(3), 32)])
