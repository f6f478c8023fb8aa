"""Bit policies for existing networks (JASQ §4.1): the genome, the layers, the search CLI and its report."""

from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest
import torch

from nasq.errors import CheckpointError, ConfigError, GenomeError
from nasq.models.torchvision_nets import (
    MODELS,
    bits_for_layers,
    build_torchvision,
    load_state_dict,
    quantizable_layers,
)
from nasq.spaces.quant_policy import QuantPolicyGenome, QuantPolicySpace


def test_genome_round_trip_and_strict_decode() -> None:
    space = QuantPolicySpace(5)
    rng = np.random.default_rng(0)
    for _ in range(50):
        g = space.random(rng)
        assert space.decode(space.encode(g)) == g
        assert set(g.bits) <= {4, 8, 16}
    assert space.decode("8-4-16-16-8").bits == (8, 4, 16, 16, 8)
    for bad in ("8-4-16-16", "8-4-16-16-8-8", "8-4-2-16-8", "8-4-x-16-8", "", "08-4-16-16-8", "8,4,16,16,8"):
        with pytest.raises(GenomeError):
            space.decode(bad)


def test_mutation_changes_exactly_one_layer() -> None:
    space = QuantPolicySpace(21)
    rng = np.random.default_rng(1)
    g = space.random(rng)
    for _ in range(100):
        child = space.mutate(g, rng)
        diff = [i for i, (a, b) in enumerate(zip(g.bits, child.bits)) if a != b]
        assert len(diff) == 1 and child.bits[diff[0]] in space.choices
        g = child


def test_space_pickles_with_its_arguments() -> None:
    space = QuantPolicySpace(7, (2, 4, 8))
    back = pickle.loads(pickle.dumps(space))
    assert back.num_layers == 7 and back.choices == (2, 4, 8)
    with pytest.raises(ConfigError):
        QuantPolicySpace(0)
    with pytest.raises(ConfigError):
        QuantPolicySpace(3, (8,))


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_networks_run_on_small_inputs(name: str) -> None:
    for shape in [(1, 8, 8), (3, 32, 32)]:
        net = build_torchvision(name, 7, shape).eval()
        with torch.no_grad():
            assert net(torch.randn(2, *shape)).shape == (2, 7)
        layers = quantizable_layers(net)
        assert all(isinstance(net.get_submodule(n), (torch.nn.Conv2d, torch.nn.Linear)) for n in layers)
    assert len(quantizable_layers(build_torchvision("resnet18", 10))) == 21
    assert MODELS[0] == "resnet18"
    with pytest.raises(ConfigError):
        build_torchvision("vgg16", 10)


def test_bits_for_layers_and_checkpoint_errors(tmp_path) -> None:
    net = build_torchvision("resnet18", 10, (1, 8, 8))
    bits = bits_for_layers(net, [4] * 20 + [16])
    assert bits["conv1.weight"] == 4 and bits["fc.weight"] == 16 and "fc.bias" not in bits
    with pytest.raises(ConfigError):
        bits_for_layers(net, [4] * 3)
    torch.save(build_torchvision("resnet18", 5, (1, 8, 8)).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_state_dict(net, str(tmp_path / "other.pt"))
    torch.save({"a": [1, 2]}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError):
        load_state_dict(net, str(tmp_path / "obj.pt"))


@pytest.mark.slow
@pytest.mark.ray
def test_search_cli_on_digits_writes_table_with_uniform_baselines(tmp_path, ray_session, capsys) -> None:
    from nasq.cli.main import main
    from nasq.quant.size import size_report

    rc = main(
        [
            "search",
            "quant-policy",
            "--model",
            "resnet18",
            "--dataset",
            "digits",
            "--data-limit",
            "300",
            "--train-epochs",
            "1",
            "--samples",
            "2",
            "--report-top",
            "1",
            "--population",
            "2",
            "--sample-size",
            "2",
            "--concurrency",
            "2",
            "--target-size-mb",
            "8",
            "--storage",
            str(tmp_path),
            "--name",
            "qp",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "qp"
    with open(run / "quant_policy_report.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert {
        "float32",
        "uniform 2-bit",
        "uniform 4-bit",
        "uniform 8-bit",
        "uniform 16-bit",
        "found #1",
    } <= set(rows)
    state = torch.load(run / "float_state_dict.pt", weights_only=True)
    net = build_torchvision("resnet18", 10, (1, 8, 8))
    for b in (2, 8):
        bits = bits_for_layers(net, [b] * 21)
        expect = size_report([(k, v, bits.get(k, 32)) for k, v in state.items()])
        assert float(rows[f"uniform {b}-bit"]["size_mb"]) == pytest.approx(expect.size_mb_huffman, rel=1e-12)
    assert float(rows["uniform 2-bit"]["size_mb"]) < float(rows["uniform 8-bit"]["size_mb"])
    assert float(rows["float32"]["compression_ratio"]) == pytest.approx(1.0, abs=1e-3)
    found = QuantPolicySpace(21).decode(rows["found #1"]["policy"])
    assert isinstance(found, QuantPolicyGenome)
    assert (run / "pareto.csv").is_file() and (run / "pareto.png").is_file()  # the one Pareto writer
    # the experiment's finish hook writes them, so `nasq report` rebuilds them like a JASQ run's
    for name in ("pareto.csv", "best_genomes.json", "quant_policy_report.csv"):
        (run / name).unlink()
    assert main(["report", str(run)]) == 0
    assert all((run / name).is_file() for name in ("pareto.csv", "best_genomes.json", "quant_policy_report.csv"))


def test_registry_and_trainable_score_without_ray(tmp_path) -> None:
    from nasq.trainables.quant_policy import score

    from nasq import spaces
    from nasq.data import load_dataset
    from nasq.fitness import jasq_fitness

    assert spaces.get("quant-policy", num_layers=3).num_layers == 3
    splits = load_dataset("digits", limit=300)
    net = build_torchvision("squeezenet1_1", splits.num_classes, splits.input_shape)
    torch.save(net.state_dict(), tmp_path / "sq.pt")
    cfg = {
        "model": "squeezenet1_1",
        "dataset": "digits",
        "data_limit": 300,
        "checkpoint": str(tmp_path / "sq.pt"),
        "target_size_mb": 0.05,
        "gamma": -0.5,
    }
    n = len(quantizable_layers(net))
    small, big = score(cfg, "-".join(["4"] * n)), score(cfg, "-".join(["16"] * n))
    assert small["size_mb"] < big["size_mb"] and small["mean_bits"] == 4 and big["mean_bits"] == 16
    for r in (small, big):
        assert 0 <= r["val_acc"] <= 100 and r["size_mb"] == r["size_mb_huffman"]
        assert r["fitness"] == pytest.approx(jasq_fitness(r["val_acc"], r["size_mb"], 0.05, -0.5))
    with pytest.raises(GenomeError):
        score(cfg, "4-4")
