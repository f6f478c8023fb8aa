"""`nasq demo` settings: a JASQ tournament search on digits that validates before Ray starts."""

from __future__ import annotations

import argparse

from nasq.cli import demo
from nasq.runner import check_settings


def test_demo_settings_are_a_valid_small_jasq_search(tmp_path):
    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--storage", str(tmp_path), "--samples", "10"])
    settings = check_settings(demo.demo_settings(args))
    assert settings.experiment == "jasq" and settings.searcher == "tournament"
    opts = settings.options
    assert opts.dataset == "digits" and opts.target_size_mb > 0 and opts.train_steps == 40
    assert settings.samples == 10 and settings.sample_size <= settings.population_size
    assert settings.name  # check_settings filled in a run name


def _demo(*argv: str):
    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers())
    return demo.demo_settings(parser.parse_args(["demo", *argv]))


def test_demo_config_file_then_flags(tmp_path):
    """--config sets what it names, flags given override it, the rest keeps the demo's defaults."""
    (tmp_path / "run.yaml").write_text("samples: 5\npopulation_size: 4\nexperiment_config:\n"
                                       "  train_steps: 11\n  target_size_mb: 0.5\n")
    settings = _demo("--config", str(tmp_path / "run.yaml"), "--train-steps", "7")
    assert (settings.samples, settings.population_size, settings.sample_size) == (5, 4, 3)
    assert settings.options.train_steps == 7 and settings.options.target_size_mb == 0.5
    assert settings.options.channels == 8  # a demo default neither the file nor a flag changed
