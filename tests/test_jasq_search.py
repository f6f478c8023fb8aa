"""End-to-end JASQ search on digits through Ray Tune, then `nasq train` on its best genome."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
import torch

from nasq.param_store import ParameterStore
from nasq.settings import JasqSettings, SearchSettings

CFG = JasqSettings(dataset="digits", combinations=2, cells=1, channels=4, bits=(4, 8, 16), train_steps=4,
                   batch_size=32, target_size_mb=0.01, gamma=-0.2, train_seed=0)


@pytest.mark.slow
@pytest.mark.ray
def test_tiny_search_writes_front_and_trains_store(ray_session, tmp_path, capsys):
    from nasq.cli.search_jasq import run_jasq
    from nasq.trainables.jasq import initial_store

    settings = SearchSettings(experiment="jasq", experiment_config=CFG, population_size=3,
                              sample_size=2, samples=4, concurrency=2, seed=0, storage=str(tmp_path),
                              name="jasq-e2e")
    assert run_jasq(settings) == 0
    run_dir = tmp_path / "jasq-e2e"
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 4 and trials["fitness"].notna().all()
    assert {"genome", "val_acc", "size_mb", "size_mb_float", "fitness"} <= set(trials.columns)
    front = pd.read_csv(run_dir / "pareto.csv")
    assert 1 <= len(front) <= 4 and set(front["genome"]) <= set(trials["genome"])
    assert (run_dir / "pareto.png").stat().st_size > 0
    best = json.loads((run_dir / "best_genomes.json").read_text())["best"]
    assert best[0]["fitness"] == pytest.approx(trials["fitness"].max())
    out = capsys.readouterr().out
    assert "Pareto front" in out and best[0]["genome"] in out

    # every trial pushed its training into the shared store, which was saved into the run
    store = ParameterStore.load(run_dir / "param_store.pt")
    fresh = initial_store(CFG)
    assert store.pushes == 4
    changed = [k for k in fresh.tensors if not torch.equal(fresh.tensors[k], store.tensors[k])]
    assert len(changed) > 10
    with pytest.raises(ValueError):  # the actor was stopped at the end of the experiment
        ray_session.get_actor("nasq-param-store-jasq-e2e")

    # nasq train: from scratch on the best genome, test accuracy and size, a state dict on disk
    from nasq.cli import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", str(run_dir), "--epochs", "0.3", "--out", str(tmp_path / "trained")])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "trained" / "report.json").read_text())
    assert report["genome"] == best[0]["genome"] and 0.0 <= report["test_acc"] <= 100.0
    assert 0 < report["size_mb"] < report["size_mb_float"]
    state = torch.load(tmp_path / "trained" / "model.pt", weights_only=True)
    assert any(k.endswith("running_mean") for k in state)


def _parse(argv: list[str]) -> argparse.Namespace:
    from nasq.cli import search_jasq

    parser = argparse.ArgumentParser()
    search_jasq.register(parser.add_subparsers())
    return parser.parse_args(["jasq", *argv])


@pytest.mark.parametrize("argv, needle", [
    (["--target-size-mb", "-1"], "--target-size-mb"),
    (["--bits", "4,x"], "--bits"),
    (["--cells", "0"], "--cells"),
    (["--gamma", "0.5"], "--gamma"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial"),
])
def test_cli_options_are_validated(argv, needle):
    from nasq.cli.search_jasq import jasq_settings
    from nasq.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        jasq_settings(_parse(argv))


def test_cli_config_carries_options():
    from nasq.cli.search_jasq import jasq_settings

    settings = jasq_settings(_parse(["--dataset", "npz:/x.npz", "--target-size-mb", "0.5", "--cells", "2",
                                     "--channels", "12", "--combinations", "4", "--bits", "2,4,8",
                                     "--train-steps", "7", "--seed", "3"]))
    opts = settings.options
    assert opts.dataset == "npz:/x.npz" and opts.target_size_mb == 0.5 and opts.bits == (2, 4, 8)
    assert (opts.cells, opts.channels, opts.combinations, opts.train_steps) == (2, 12, 4, 7)
    assert settings.seed == 3 and (settings.population_size, settings.sample_size) == (16, 4)
    # the trainable reads the same typed settings back from its trial config
    assert JasqSettings.from_config({**settings.experiment_config, "genome": "g"}) == opts


def test_cli_config_makes_data_paths_absolute(tmp_path, monkeypatch):
    """Trials run in their own folders, so a relative npz path or data root must be resolved first."""
    from nasq.cli.search_jasq import jasq_settings

    monkeypatch.chdir(tmp_path)
    opts = jasq_settings(_parse(["--dataset", "npz:data/set.npz"])).options
    assert opts.dataset == f"npz:{tmp_path / 'data' / 'set.npz'}"
    opts = jasq_settings(_parse(["--dataset", "cifar10", "--data-root", "cifar"])).options
    assert opts.data_root == str(tmp_path / "cifar")
