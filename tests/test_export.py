"""Compressed model files (JASQ §3.4): round trip, size on disk, corrupt files."""

from __future__ import annotations

import os

import pytest
import torch

from nasq.errors import CheckpointError
from nasq.quant.bucket import quantize_dequantize
from nasq.quant.export import export_model, load_compressed
from nasq.quant.size import MB, size_report


def _model_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 30 * 30, 10),
    )
    return net.state_dict()


BITS = {"0.weight": 4, "0.bias": 16, "4.weight": 8, "1.weight": 2}


def test_round_trip_bit_exact_and_size_is_file_length(tmp_path) -> None:
    sd = _model_state()
    path = tmp_path / "m.nasqz"
    report = export_model(sd, BITS, path, bucket_size=128)
    assert report.size_mb_huffman * MB == os.path.getsize(path)
    items = [(k, v, BITS.get(k, 32)) for k, v in sd.items()]
    assert report == size_report(items, bucket_size=128)
    assert report.size_mb_fixed < report.size_mb_float and report.size_mb_huffman < report.size_mb_float / 3
    back = load_compressed(path)
    assert list(back) == list(sd)
    for name, w in sd.items():
        if w.is_floating_point():
            assert torch.equal(back[name], quantize_dequantize(w, BITS.get(name, 32), 128)), name
        else:
            assert back[name].dtype == w.dtype and torch.equal(back[name], w)
    assert len(torch.unique(back["0.weight"].reshape(-1)[:128])) <= 16  # one 4-bit bucket


def test_corrupt_truncated_and_foreign_files(tmp_path) -> None:
    path = tmp_path / "m.nasqz"
    export_model(_model_state(), BITS, path)
    data = bytearray(path.read_bytes())
    bad = tmp_path / "bad.nasqz"
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_compressed(bad)
    bad.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load_compressed(bad)
    torch.save(_model_state(), bad)
    with pytest.raises(CheckpointError, match="not a nasq"):
        load_compressed(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_compressed(tmp_path / "nope")


def test_policy_naming_unknown_tensor_rejected(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not in the model"):
        export_model(_model_state(), {"missing.weight": 4}, tmp_path / "x")


def test_cli_exports_torchvision_state_dict(tmp_path, capsys) -> None:
    import torchvision

    from nasq.cli.main import main

    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(num_classes=10)
    ckpt = tmp_path / "sq.pt"
    torch.save(net.state_dict(), ckpt)
    policy = ",".join(["4", "8"] * 13)
    out = tmp_path / "sq.nasqz"
    assert (
        main(
            [
                "export",
                str(ckpt),
                "--model",
                "squeezenet1_1",
                "--bits-policy",
                policy,
                "--out",
                str(out),
                "--verify",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert f"{os.path.getsize(out) / MB:.4f} MB (= file length" in text and "verified" in text
    back = load_compressed(out)
    assert torch.equal(
        back["features.0.weight"], quantize_dequantize(net.state_dict()["features.0.weight"], 4)
    )
    assert (
        main(["export", str(ckpt), "--model", "squeezenet1_1", "--bits-policy", "4,8", "--out", str(out)])
        == 2
    )
    assert "quantizable layers" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert (
        main(["export", str(tmp_path / "junk.pt"), "--model", "squeezenet1_1", "--bits-policy", policy]) == 2
    )
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_cli_exports_jasq_genome_of_a_run(tmp_path, capsys) -> None:
    import zlib

    import numpy as np
    from nasq.trainables.jasq import bit_rule_of, net_config_of, space_of, splits_of

    from nasq.cli.main import main
    from nasq.models.nasnet import build_network
    from nasq.models.training import state_bits
    from nasq.runner import SearchSettings, write_run_file

    cfg = {"dataset": "digits", "cells": 1, "combinations": 2, "channels": 4}
    run = tmp_path / "run"
    run.mkdir()
    write_run_file(run, SearchSettings(experiment="jasq", experiment_config=cfg, name="run"))
    space = space_of(cfg)
    genome = space.random_str(np.random.default_rng(0))
    net_cfg = net_config_of(cfg, splits_of(cfg))
    net = build_network(space.decode(genome), net_cfg)
    assert main(["export", str(run), "--genome", genome]) == 2
    assert "nasq train" in capsys.readouterr().err
    ckpt = run / "trained" / f"{zlib.crc32(genome.encode()):08x}" / "model.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "j.nasqz"
    assert main(["export", str(run), "--genome", genome, "--out", str(out), "--verify"]) == 0
    bits = state_bits(net, space.decode(genome), net_cfg, bit_rule_of(cfg))
    back = load_compressed(out)
    for name, w in net.state_dict().items():
        expect = quantize_dequantize(w, bits.get(name, 32)) if w.is_floating_point() else w
        assert torch.equal(back[name], expect), name
    assert f"{os.path.getsize(out) / MB:.4f} MB" in capsys.readouterr().out


def _mixed_state() -> dict[str, torch.Tensor]:
    """A large skewed tensor (Huffman wins), tiny ones (packing wins) and an integer counter."""
    g = torch.Generator().manual_seed(3)
    big = torch.distributions.Laplace(0.0, 0.05).sample((300, 400))
    return {
        "big": big,
        "tiny": torch.randn(5, 3, generator=g),
        "tiny16": torch.randn(9, generator=g),
        "odd": torch.randn(13, generator=g),
        "count": torch.tensor(12),
    }


MIXED_BITS = {"big": 4, "tiny": 8, "tiny16": 16, "odd": 3}


def _header(path) -> dict:
    import json
    import struct
    import zlib

    data = path.read_bytes()
    (hlen,) = struct.unpack("<I", data[8:12])
    return json.loads(zlib.decompress(data[12 : 12 + hlen]))


def test_per_tensor_forms_round_trip_bit_exact_and_size_is_file_length(tmp_path) -> None:
    sd = _mixed_state()
    path = tmp_path / "mixed.nasqz"
    report = export_model(sd, MIXED_BITS, path, bucket_size=64)
    assert report.size_mb_huffman * MB == os.path.getsize(path)
    flags = {t[0]: t[4] for t in _header(path)["tensors"]}  # 1: Huffman-coded, 0: packed or raw
    assert flags == {"big": 1, "tiny": 0, "tiny16": 0, "odd": 0, "count": 0}
    assert report.num_packed_tensors == 3
    back = load_compressed(path)
    for name, w in sd.items():
        if name in MIXED_BITS:
            assert torch.equal(back[name], quantize_dequantize(w, MIXED_BITS[name], 64)), name
        else:
            assert torch.equal(back[name], w) and back[name].dtype == w.dtype
    from nasq.quant.container import file_nbytes, plan

    items = [(k, v, MIXED_BITS.get(k, 32)) for k, v in sd.items()]
    for coding in ("huffman", "packed"):  # both single-form files are longer
        assert os.path.getsize(path) < file_nbytes(plan(items, 64, coding=coding))


def test_all_packed_file_loads_bit_exact(tmp_path) -> None:
    from nasq.quant.container import plan
    from nasq.quant.export import write_plan

    sd = _mixed_state()
    p = plan([(k, v, MIXED_BITS.get(k, 32)) for k, v in sd.items()], 64, coding="packed")
    path = tmp_path / "packed.nasqz"
    with open(path, "wb") as f:
        write_plan(p, f)
    assert {t[4] for t in _header(path)["tensors"]} == {0} and _header(path)["groups"] == []
    back = load_compressed(path)
    for name, bits in MIXED_BITS.items():
        assert torch.equal(back[name], quantize_dequantize(sd[name], bits, 64)), name


def _rewrite_header(p, doc: dict) -> None:
    import json
    import zlib

    p.header = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 9)


def test_version_1_file_still_loads_and_unknown_version_fails_in_one_line(tmp_path) -> None:
    from nasq.quant.container import FORMAT_VERSION, header_dict, plan
    from nasq.quant.export import write_plan

    assert FORMAT_VERSION == 2
    sd = _mixed_state()
    p = plan([(k, v, MIXED_BITS.get(k, 32)) for k, v in sd.items()], 64, coding="huffman")
    doc = header_dict(p)
    old = dict(doc, version=1, tensors=[t[:4] for t in doc["tensors"]])  # version 1: no form flag
    _rewrite_header(p, old)
    path = tmp_path / "v1.nasqz"
    with open(path, "wb") as f:
        write_plan(p, f)
    back = load_compressed(path)
    for name, bits in MIXED_BITS.items():
        assert torch.equal(back[name], quantize_dequantize(sd[name], bits, 64)), name
    _rewrite_header(p, dict(doc, version=99))
    with open(path, "wb") as f:
        write_plan(p, f)
    with pytest.raises(CheckpointError, match="unsupported format/version 99") as err:
        load_compressed(path)
    assert "\n" not in str(err.value)
    bad = dict(doc, tensors=[t[:4] + [7] for t in doc["tensors"]])
    _rewrite_header(p, bad)
    with open(path, "wb") as f:
        write_plan(p, f)
    with pytest.raises(CheckpointError, match="bad Huffman flag"):
        load_compressed(path)
