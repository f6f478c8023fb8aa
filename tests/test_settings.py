"""Typed settings (one frozen dataclass per experiment), --config files, and a light, Ray-free core."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from nasq.errors import ConfigError
from nasq.settings import (
    JasqSettings,
    NB201Settings,
    QuantPolicySettings,
    SearchSettings,
    field_help,
    load_config,
)

CLASSES = (SearchSettings, NB201Settings, JasqSettings, QuantPolicySettings)
QP = {"train_epochs": 1.0}  # quant-policy needs a weight source


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_default_and_a_comment(cls):
    fields = dataclasses.fields(cls)
    helps = field_help(cls)
    assert {f.name for f in fields} == set(helps)
    assert all(helps[f.name] for f in fields)
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    assert required == (["experiment"] if cls is SearchSettings else [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cls(**({"experiment": "nb201"} if cls is SearchSettings else QP if cls is QuantPolicySettings
                      else {})), fields[0].name, None)


def test_same_concept_same_name():
    jasq = {f.name for f in dataclasses.fields(JasqSettings)}
    qp = {f.name for f in dataclasses.fields(QuantPolicySettings)}
    nb = {f.name for f in dataclasses.fields(NB201Settings)}
    for name in ("data_limit", "data_seed", "dataset", "bits", "bucket_size", "target_size_mb", "gamma",
                 "cpus_per_trial"):
        assert name in jasq and name in qp
    assert "cpus_per_trial" in nb
    assert not ({"limit", "threads", "bit_choices", "seed"} & (jasq | qp | nb))


@pytest.mark.parametrize("cls, kwargs, needle", [
    (NB201Settings, {"cpus_per_trial": 0}, "--cpus-per-trial"),
    (NB201Settings, {"sim_time": -1.0}, "--sim-time"),
    (NB201Settings, {"dataset": "mnist"}, "--dataset"),
    (NB201Settings, {"constraint_mode": "soft"}, "--constraint-mode"),
    (NB201Settings, {"penalty_gamma": 0.3}, "--penalty-gamma"),
    (NB201Settings, {"max_latency_ms": 3.0}, "--latency-table"),
    (JasqSettings, {"data_limit": 3}, "--data-limit"),
    (JasqSettings, {"dataset": "unknown"}, "unknown data set"),
    (JasqSettings, {"bits": "4,¹"}, "--bits"),
    (JasqSettings, {"train_steps": 0}, "--train-steps"),
    (JasqSettings, {"train_steps": True}, "--train-steps"),
    (JasqSettings, {"lr": float("nan")}, "--lr"),
    (JasqSettings, {"target_size_mb": -1.0}, "--target-size-mb"),
    (QuantPolicySettings, {**QP, "bucket_size": 0}, "--bucket-size"),
    (QuantPolicySettings, {**QP, "target_size_mb": 0.0}, "--target-size-mb"),
    (QuantPolicySettings, {}, "no float weights"),
    (QuantPolicySettings, {**QP, "checkpoint": "/x.pt"}, "--checkpoint"),
    (SearchSettings, {"experiment": "nb201", "samples": 0}, "--samples"),
    (SearchSettings, {"experiment": "nb201", "name": "a/b"}, "--name"),
    (SearchSettings, {"experiment": "nb201", "experiment_config": {"tabel": "x"}}, "tabel"),
    (SearchSettings, {"experiment": "nb201", "experiment_config": JasqSettings()}, "JasqSettings"),
])
def test_bad_values_name_the_field(cls, kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as exc:
        cls(**kwargs)
    assert "\n" not in str(exc.value)


def test_round_trip_through_json_and_trial_config():
    settings = SearchSettings("jasq", JasqSettings(bits=(2, 8), data_limit=50), searcher="aging", samples=9,
                              points_to_evaluate=["g1"])
    doc = json.loads(json.dumps(settings.to_dict()))
    assert SearchSettings.from_dict(doc) == settings
    assert settings.options == JasqSettings(bits=(2, 8), data_limit=50)
    assert JasqSettings.from_config({**settings.experiment_config, "genome": "x", "lr_hpo": 0.1}) == \
        settings.options
    with pytest.raises(ConfigError, match="unknown search setting"):
        SearchSettings.from_dict({**doc, "populaton_size": 3})


def test_load_config_reads_yaml_and_run_files(tmp_path):
    (tmp_path / "a.yaml").write_text("experiment: nb201\nsamples: 7\n"
                                     "experiment_config: {dataset: cifar100}\n")
    assert load_config(tmp_path / "a.yaml")["samples"] == 7
    from nasq.runfile import write_run_file

    settings = SearchSettings("nb201", NB201Settings(dataset="cifar100"), samples=7, name="r")
    write_run_file(tmp_path, settings)
    # a run file as --config gives the same settings under a new name (the run's own name is taken)
    assert SearchSettings.from_dict(load_config(tmp_path / "nasq-run.json")).replace(name="r") == settings
    assert SearchSettings.from_dict(load_config(tmp_path / "nasq-run.json")).name is None
    (tmp_path / "bad.yaml").write_text("samples: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_config_of_another_experiment_is_refused(tmp_path):
    import argparse

    from nasq.cli import search_nb201

    (tmp_path / "j.yaml").write_text("experiment: jasq\n")
    parser = argparse.ArgumentParser()
    search_nb201.register(parser.add_subparsers())
    with pytest.raises(ConfigError, match="nasq search jasq"):
        search_nb201.nb201_settings(parser.parse_args(["nb201", "--config", str(tmp_path / "j.yaml")]))


PROBE = r"""
import json, sys
out = {}
import nasq
out["import nasq"] = sorted(m for m in ("ray", "ray.tune", "torch") if m in sys.modules)
import nasq.runner
out["runner"] = sorted(m for m in ("ray", "nasq.report") if m in sys.modules)
del sys.modules["nasq.runner"]
import nasq.report
out["report"] = sorted(m for m in ("ray", "nasq.runner") if m in sys.modules)
import nasq.cli.main
nasq.cli.main.build_parser()
out["help"] = "ray.tune" in sys.modules
out["lazy"] = [type(nasq.settings).__name__, nasq.JasqSettings.__name__]
print(json.dumps(out))
"""


def test_core_imports_no_ray():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["import nasq"] == []  # `import nasq` alone loads neither Ray nor torch
    assert out["help"] is False  # `nasq --help` does not load Ray Tune
    assert out["runner"] == [] and out["report"] == []  # Ray-free, and neither imports the other
    assert out["lazy"][:2] == ["module", "JasqSettings"]


def test_public_api_names():
    import nasq
    import nasq.searchers.callbacks

    assert nasq.searchers.callbacks.CompletionLog.__name__ == "CompletionLog"
    assert nasq.runner.run_search is nasq.run_search
    assert nasq.predictor.LatencyPredictor is nasq.LatencyPredictor
    assert "trainables" in dir(nasq)


def test_run_file_of_the_untyped_release_is_refused_in_one_line(tmp_path):
    from nasq.errors import CheckpointError
    from nasq.runfile import RUN_FILE, read_run_file

    old = {"format": "nasq.run", "version": 1, "settings": {"experiment": "jasq", "experiment_config": {
        "seed": 0, "threads": 1}, "searcher": "tournament"}}
    (tmp_path / RUN_FILE).write_text(json.dumps(old))
    with pytest.raises(CheckpointError, match="before typed settings.*start a new search"):
        read_run_file(tmp_path)
