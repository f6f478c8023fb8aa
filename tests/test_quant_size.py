"""Size accounting and Huffman coding (JASQ §3.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.errors import CheckpointError
from nasq.quant import huffman
from nasq.quant.container import file_nbytes, plan
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


def _skewed(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.laplace(0, 0.05, n).astype(np.float32))


def _forms(p) -> dict[str, str]:
    return {e.name: e.form for e in p.entries}


def test_tiny_tensor_is_packed_and_large_skewed_one_huffman_coded() -> None:
    torch.manual_seed(0)
    items = [("tiny", torch.randn(40), 8), ("big", _skewed(100_000), 4), ("n", torch.tensor(7), 32)]
    best, coded, packed = (plan(items, coding=c) for c in ("best", "huffman", "packed"))
    assert _forms(best) == {"tiny": "packed", "big": "huffman", "n": "raw"}
    # the 8-bit table alone costs more than packing 40 symbols; the skewed stream is worth its table
    assert file_nbytes(best) < min(file_nbytes(coded), file_nbytes(packed))
    assert [g.bits for g in best.groups] == [4] and len(best.groups[0].symbols) == 100_000
    assert size_report(items).size_mb_huffman * MB == file_nbytes(best)
    assert size_report(items).num_packed_tensors == 1


def test_tensor_sharing_a_skewed_code_is_packed_when_it_does_not_fit_it() -> None:
    # a uniform tensor coded with the laplace stream's code costs more than 4 bits a symbol
    rng = np.random.default_rng(1)
    flat = torch.from_numpy(rng.uniform(-1, 1, 20_000).astype(np.float32))
    items = [("big", _skewed(200_000), 4), ("flat", flat, 4)]
    best = plan(items)
    assert _forms(best) == {"big": "huffman", "flat": "packed"}
    assert len(best.groups[0].symbols) == 200_000  # the code was rebuilt from "big" alone
    assert file_nbytes(best) < file_nbytes(plan(items, coding="huffman"))


def _random_items(rng: np.random.Generator) -> list[tuple[str, torch.Tensor, int]]:
    items = []
    for i in range(int(rng.integers(1, 9))):
        n = int(np.exp(rng.uniform(0, np.log(60_000))))
        kind = rng.integers(4)
        if kind == 0:
            w = rng.laplace(0, 1, n)
        elif kind == 1:
            w = rng.normal(0, 1, n)
        elif kind == 2:
            w = rng.uniform(-1, 1, n)
        else:
            w = np.full(n, 0.5)
        bits = int(rng.choice([1, 2, 3, 4, 5, 8, 16, 32]))
        items.append((f"t{i}", torch.from_numpy(w.astype(np.float32)), bits))
    return items


def test_choice_never_larger_than_all_huffman_or_all_packed_on_random_models() -> None:
    rng = np.random.default_rng(7)
    took, strict = set(), 0
    for _ in range(25):
        items = _random_items(rng)
        best = plan(items)
        sizes = {c: file_nbytes(plan(items, coding=c)) for c in ("huffman", "packed")}
        assert file_nbytes(best) <= min(sizes.values()), sizes
        assert size_report(items).size_mb_huffman * MB == file_nbytes(best)
        took |= set(_forms(best).values())
        strict += file_nbytes(best) < min(sizes.values())
    assert {"huffman", "packed"} <= took and strict >= 3  # mixed files beat both single forms


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 7, 8, 11, 16])
def test_pack_symbols_round_trip(bits: int) -> None:
    from nasq.quant.bucket import pack_symbols, packed_nbytes, unpack_symbols

    rng = np.random.default_rng(bits)
    for n in (1, 7, 1001):
        s = rng.integers(0, 2**bits, n).astype(np.uint16)
        data = pack_symbols(s, bits)
        assert len(data) == packed_nbytes(n, bits) == -(-n * bits // 8)
        assert np.array_equal(unpack_symbols(data, bits, n), s)
    assert pack_symbols(np.array([1, 0, 3], dtype=np.uint16), 2) == bytes([0b01001100])
