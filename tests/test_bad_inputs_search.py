"""Bad inputs to the search verbs: one `nasq: error:` line, exit 2, before Ray starts, nothing written.

All cases run the real CLI (``nasq.cli.main.main``) one after another in ONE child process (as a user
would, but paying the imports once). For each case the child records the exit code, what went to
stdout and stderr, and whether Ray was initialised afterwards; the tests check that stderr is exactly
one ``nasq: error:`` line, stdout is empty (the CLI prints the dashboard URL only once Ray is up), Ray
never started and the storage folder stayed empty (no run folder, not even a half-made one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
# The child: run each case's argv under its environment, record what a user would see.
BATCH = r"""
import contextlib, io, json, os, sys
import ray
from nasq.cli.main import main
out = {}
for name, (argv, env) in json.load(open(sys.argv[1])).items():
    saved = dict(os.environ)
    os.environ.update(env)
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code, _ = -1, err.write(f"uncaught {type(exc).__name__}: {exc}")
    out[name] = {"code": code, "stderr": err.getvalue(), "stdout": std.getvalue(),
                 "ray": ray.is_initialized()}
    if ray.is_initialized():
        ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)
json.dump(out, open(sys.argv[2], "w"))
"""
JASQ_GENOME = "N:0,0,sep3x3,sep5x5;2,1,identity,max3x3|R:1,1,zero,max3x3;1,1,identity,sep5x5|B:16,8,8,4,4"
SMALL_JASQ = ("--combinations", "2", "--samples", "2")


def _env() -> dict:
    drop = ("NASQ_DEBUG", "RAY_ADDRESS", "NASQ_RAY_NUM_CPUS")
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return {**base, "NASQ_RAY_DASHBOARD": "0"}


def _nasq(argv: list[str], env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**_env(), **(env or {})})


def _table_of(rows: int, source: Path, out: Path) -> Path:
    lines = source.read_text().splitlines()
    out.write_text("\n".join(lines[: rows + 1]) + "\n")
    return out


def _cases(tmp: Path, table: Path) -> dict[str, tuple[list[str], dict, str]]:
    """case id -> (argv after `search`/`demo`, environment, a word the one line must contain)."""
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(b"this is not a state dict")
    nb201 = ["search", "nb201", "--table", str(table), "--samples", "4", "--population", "3",
             "--sample-size", "2"]
    jasq = ["search", "jasq", *SMALL_JASQ]
    qp = ["search", "quant-policy", "--model", "resnet18", "--train-epochs", "1", "--samples", "2"]
    return {
        "cpus-per-trial-0": (nb201 + ["--cpus-per-trial", "0"], {}, "--cpus-per-trial"),
        "cpus-per-trial-64": (nb201 + ["--cpus-per-trial", "64"], {"NASQ_RAY_NUM_CPUS": "2"}, "never run"),
        "num-cpus-two": (nb201, {"NASQ_RAY_NUM_CPUS": "two"}, "NASQ_RAY_NUM_CPUS"),
        "num-cpus-minus-1": (nb201, {"NASQ_RAY_NUM_CPUS": "-1"}, "NASQ_RAY_NUM_CPUS"),
        "num-cpus-0": (nb201, {"NASQ_RAY_NUM_CPUS": "0"}, "NASQ_RAY_NUM_CPUS"),
        "two-children-one-kind": (nb201 + ["--searcher", "aging", "--children-per-parent", "2"], {},
                                  "children_per_parent"),
        "storage-is-a-file": (nb201 + ["--storage", str(garbage)], {}, "is a file"),
        "sim-time-negative": (nb201 + ["--sim-time", "-1"], {}, "--sim-time"),
        "constraint-mode": (nb201 + ["--constraint-mode", "soft"], {}, "--constraint-mode"),
        "nb201-table-49-rows": (["search", "nb201", "--table", str(_table_of(49, table, tmp / "t49.csv")),
                                 "--samples", "4"], {}, "15625"),
        "jasq-points-superscript": (jasq + ["--points", JASQ_GENOME.replace("2,1,", "¹,1,")], {}, "¹"),
        "jasq-dataset-unknown": (jasq + ["--dataset", "unknown"], {}, "unknown data set"),
        "jasq-missing-npz": (jasq + ["--dataset", f"npz:{tmp / 'missing.npz'}"], {}, "not found"),
        "jasq-data-limit-3": (jasq + ["--data-limit", "3"], {}, "--data-limit"),
        "jasq-bits-superscript": (jasq + ["--bits", "4,¹"], {}, "--bits"),
        "qp-bucket-size-0": (qp + ["--bucket-size", "0"], {}, "--bucket-size"),
        "qp-target-size-0": (qp + ["--target-size-mb", "0"], {}, "--target-size-mb"),
        "qp-garbage-checkpoint": (["search", "quant-policy", "--model", "resnet18", "--checkpoint",
                                   str(garbage), "--samples", "2"], {}, "garbage.pt"),
        "qp-unknown-model": (qp + ["--model", "resnet9000"], {}, "resnet9000"),
        "demo-train-steps-0": (["demo", "--train-steps", "0"], {}, "--train-steps"),
        "demo-target-size-negative": (["demo", "--target-size-mb", "-1"], {}, "--target-size-mb"),
        "samples-not-a-number": (nb201 + ["--samples", "x"], {}, "--samples"),
        "config-missing": (nb201 + ["--config", str(tmp / "none.yaml")], {}, "--config"),
    }


def _ids() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the case table writes its small files into a folder
        return list(_cases(Path(tmp), Path(__file__)))


@pytest.fixture(scope="module")
def results(nb201_table, tmp_path_factory) -> tuple[dict, Path]:
    """Run every case in one child process; return its records and the folder of the cases' storage."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    cases = {}
    for name, (argv, env, _) in _cases(tmp, nb201_table).items():
        storage = tmp / "runs" / name
        storage.mkdir(parents=True)
        cases[name] = ([*argv, "--storage", str(storage)] if "--storage" not in argv else argv, env)
    foreign = tmp / "runs" / "foreign" / "mine"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("my own files")
    cases["foreign-name"] = (["search", "nb201", "--table", str(nb201_table), "--samples", "2", "--storage",
                              str(foreign.parent), "--name", "mine"], {})
    (tmp / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run([sys.executable, "-c", BATCH, str(tmp / "cases.json"), str(tmp / "out.json")],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "out.json").read_text()), tmp / "runs"


@pytest.mark.parametrize("case", _ids())
def test_bad_input_is_one_line_before_ray(case, results, nb201_table, tmp_path):
    records, storage = results
    rec = records[case]
    lines = rec["stderr"].strip().splitlines()
    needle = _cases(tmp_path, nb201_table)[case][2]
    assert rec["code"] == 2, rec["stderr"][-2000:]
    assert len(lines) == 1 and lines[0].startswith("nasq: error: "), rec["stderr"][-2000:]
    assert needle in lines[0]
    assert rec["stdout"] == "" and not rec["ray"]  # Ray never started
    assert not list((storage / case).iterdir())  # no run folder, not even a half-made one


def test_foreign_folder_is_never_written(results):
    records, storage = results
    rec, foreign = records["foreign-name"], storage / "foreign" / "mine"
    lines = rec["stderr"].strip().splitlines()
    assert rec["code"] == 2 and len(lines) == 1 and "not a nasq run" in lines[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "my own files"


@pytest.mark.slow
def test_unschedulable_trial_in_a_real_child_process(nb201_table, tmp_path):
    """The hang of the issue, as a user meets it: a separate process, its own stderr, no Ray lines."""
    proc = _nasq(["search", "nb201", "--table", str(nb201_table), "--samples", "2", "--cpus-per-trial", "64",
                  "--storage", str(tmp_path)], {"NASQ_RAY_NUM_CPUS": "2"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("nasq: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.ray
@pytest.mark.slow
def test_failure_after_ray_start_leaves_no_run_folder(ray_session, nb201_table, tmp_path):
    """A trial asking for more CPUs than the (already running, 2-CPU) Ray has fails after connecting:
    the run folder this call created is removed again."""
    from nasq import runner
    from nasq.errors import ConfigError
    from nasq.settings import NB201Settings, SearchSettings

    settings = SearchSettings("nb201", NB201Settings(table=str(nb201_table), cpus_per_trial=3),
                              population_size=3, sample_size=2, samples=2, storage=str(tmp_path), name="x")
    with pytest.raises(ConfigError, match="2 CPUs of the Ray cluster"):
        runner.run_search(settings, verbose=0)
    assert not (tmp_path / "x").exists()
    # a folder this call did not create (empty) is left in place
    (tmp_path / "y").mkdir()
    with pytest.raises(ConfigError):
        runner.run_search(settings.replace(name="y"), verbose=0)
    assert (tmp_path / "y").is_dir() and not list((tmp_path / "y").iterdir())
    # a failure after the run file was written into an existing empty folder removes that file again
    (tmp_path / "z").mkdir()

    def boom(url, run_dir):
        assert (run_dir / "nasq-run.json").is_file()
        raise ConfigError("stopped by the test")

    with pytest.raises(ConfigError, match="stopped by the test"):
        runner.run_search(settings.replace(name="z", options={"cpus_per_trial": 1.0}),
                          verbose=0, on_connect=boom)
    assert (tmp_path / "z").is_dir() and not list((tmp_path / "z").iterdir())
