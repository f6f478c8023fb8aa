"""One-line CLI errors of `nasq search nb201` and `nasq resume` (exit 2, fix named; NASQ_DEBUG shows more)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from nasq import runner
from nasq.cli import main as cli_main
from nasq.errors import CheckpointError, DataError

# The real `nasq` command, run in a child process with this interpreter.
CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def nasq(monkeypatch, capsys):
    """Run the real CLI in-process; return (exit code, stderr lines)."""
    monkeypatch.delenv("NASQ_DEBUG", raising=False)

    def call(*argv: str) -> tuple[int, list[str]]:
        code = cli_main.main(list(argv))
        return code, capsys.readouterr().err.strip().splitlines()

    return call


def _search(table, tmp_path, *extra):
    return ("search", "nb201", "--table", str(table), "--storage", str(tmp_path), "--samples", "4", *extra)


def test_bad_table_path(nasq, tmp_path):
    code, err = nasq(*_search(tmp_path / "missing.csv", tmp_path))
    assert code == 2 and len(err) == 1
    assert "not found" in err[0] and "--table" in err[0]
    assert not list(tmp_path.glob("*/nasq-run.json"))  # nothing started


def test_table_without_accuracy_column(nasq, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ArchitectureString,foo\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n")
    code, err = nasq(*_search(bad, tmp_path))
    assert code == 2 and len(err) == 1 and "CIFAR10TestAccuracy200Epochs" in err[0]


def test_bad_searcher_name(nasq, nb201_table, tmp_path):
    code, err = nasq(*_search(nb201_table, tmp_path, "--searcher", "annealing"))
    assert code == 2 and len(err) == 1
    assert "annealing" in err[0] and "tournament" in err[0] and "aging" in err[0]


def test_malformed_genome_in_points(nasq, nb201_table, tmp_path):
    code, err = nasq(*_search(nb201_table, tmp_path, "--points", "|nor_conv_3x3~0|+|conv_7x7~0|none~1|+"
                              "|none~0|none~1|none~2|"))
    assert code == 2 and len(err) == 1
    assert "conv_7x7" in err[0] and "nor_conv_3x3" in err[0]


def test_impossible_latency_limit(nasq, nb201_table, tmp_path):
    latency = Path(nb201_table).parent / "nb201_latency_help_24dev.csv"
    code, err = nasq(*_search(nb201_table, tmp_path, "--latency-table", str(latency), "--latency-column",
                              "lat_ms_raspi4", "--max-latency-ms", "0.001"))
    assert code == 2 and len(err) == 1 and "--max-latency-ms" in err[0]


def test_resume_dir_without_run_file(nasq, tmp_path):
    code, err = nasq("resume", str(tmp_path))
    assert code == 2 and len(err) == 1
    assert "nasq-run.json" in err[0] and "nasq search" in err[0]


def test_resume_foreign_run_file(nasq, tmp_path):
    (tmp_path / runner.RUN_FILE).write_text(json.dumps({"format": "something-else"}))
    code, err = nasq("resume", str(tmp_path))
    assert code == 2 and len(err) == 1 and "not a nasq run file" in err[0]


def _fake_run(tmp_path: Path, table: Path, state_text: str) -> Path:
    """A run directory with valid settings, a Tune snapshot marker and the given searcher state."""
    settings = runner.check_settings(runner.SearchSettings(
        "nb201", {"table": str(table)}, population_size=4, sample_size=2, storage=str(tmp_path), name="r"))
    run_dir = runner.run_dir_of(settings)
    run_dir.mkdir()
    runner.write_run_file(run_dir, settings)
    (run_dir / "tuner.pkl").write_bytes(pickle.dumps({}))  # a minimal Tune snapshot nasq accepts
    (run_dir / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [], "runner_data": {}}')
    (run_dir / "nasq-searcher-state-2026-01-01_00-00-00.json").write_text(state_text)
    return run_dir


def test_resume_corrupt_searcher_state(nasq, nb201_table, tmp_path):
    run_dir = _fake_run(tmp_path, nb201_table, '{"searcher": "TournamentSelectionSearcher", "strat')
    code, err = nasq("resume", str(run_dir))
    assert code == 2 and len(err) == 1
    assert "not valid JSON" in err[0] and "nasq-searcher-state" in err[0]


def test_resume_state_of_another_searcher(nasq, nb201_table, tmp_path):
    other = runner.build_searcher(runner.SearchSettings(
        "nb201", {"table": str(nb201_table)}, searcher="aging", population_size=4, sample_size=2))
    run_dir = _fake_run(tmp_path, nb201_table, json.dumps(other.get_state()))
    code, err = nasq("resume", str(run_dir))
    assert code == 2 and len(err) == 1 and "AgingEvolutionSearcher" in err[0]


def test_debug_variable_raises_instead(monkeypatch, tmp_path):
    monkeypatch.setenv("NASQ_DEBUG", "1")
    with pytest.raises(CheckpointError):
        cli_main.main(["resume", str(tmp_path)])
    with pytest.raises(DataError):
        cli_main.main(list(_search(tmp_path / "missing.csv", tmp_path)))


def test_subprocess_prints_one_line_or_a_traceback(tmp_path):
    argv = [sys.executable, "-c", CLI, "resume", str(tmp_path)]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "NASQ_DEBUG"})
    assert plain.returncode == 2 and plain.stdout == ""
    assert len(plain.stderr.strip().splitlines()) == 1 and plain.stderr.startswith("nasq: error: ")
    debug = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "NASQ_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "CheckpointError" in debug.stderr


def test_search_into_an_existing_run(nasq, nb201_table, tmp_path):
    run_dir = _fake_run(tmp_path, nb201_table, "{}")
    code, err = nasq(*_search(nb201_table, tmp_path, "--name", run_dir.name))
    assert code == 2 and len(err) == 1 and "nasq resume" in err[0]
