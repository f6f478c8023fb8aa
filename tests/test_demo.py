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
    cfg = settings.experiment_config
    assert cfg["dataset"] == "digits" and cfg["target_size_mb"] > 0
    assert settings.samples == 10 and settings.sample_size <= settings.population_size
    assert settings.name  # check_settings filled in a run name
