"""Bad inputs to `nasq train|export|latency|report|resume` get one line, exit 2, and change nothing (issue 7 §4).

Each case runs the real CLI (in-process, or in a fresh process where Ray start-up noise or a second Ray
would show) and checks: exit status 2, exactly one stderr line starting ``nasq: error:`` that names the
problem, no traceback, and, where files existed before, every file byte for byte and mtime unchanged.
The runs are real: a tiny NB201 search and a tiny JASQ search, each made once per module through the CLI
and copied per test before it is corrupted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nasq.cli.main as cli_main

# Tests on the real NB201/JASQ runs (marked slow, ray) start Ray Tune through the CLI; the rest run
# without Ray.

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
FAST = ["--actors", "0", "--repeats", "3", "--warmup", "0"]


# --------------------------------------------------------------------------- helpers


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """The real ``nasq`` entry point in this process."""
    capsys.readouterr()
    code = cli_main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_fresh(argv: list[str], timeout: float = 240) -> tuple[int, str, str]:
    """The real ``nasq`` command in a fresh process (its stderr shows any Ray start-up)."""
    env = {**os.environ, "NASQ_RAY_DASHBOARD": "0", "NASQ_RAY_NUM_CPUS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", CLI, *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line(code: int, err: str, *words: str) -> None:
    """Exit 2 and exactly one ``nasq: error:`` line on stderr containing every word (case-insensitive)."""
    lines = err.splitlines()
    assert code == 2, f"exit {code}, stderr:\n{err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("nasq: error: "), err[-3000:]
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), f"{w!r} not in {lines[0]!r}"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: relative path -> (bytes, mtime in ns)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run directory keeping mtimes (so an unchanged file keeps its snapshot)."""
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its length (a driver killed mid-write, a full disk)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def newest(run_dir: Path, pattern: str) -> Path:
    files = sorted(run_dir.glob(pattern))
    assert files, f"no {pattern} in {run_dir}"
    return files[-1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def nb201_run(ray_session, nb201_table, tmp_path_factory) -> Path:
    """A small finished NB201 run made by `nasq search nb201` (real Ray Tune)."""
    storage = tmp_path_factory.mktemp("nb201-runs")
    code = cli_main.main(["search", "nb201", "--table", str(nb201_table), "--samples", "4", "--population",
                          "3", "--sample-size", "2", "--searcher", "tournament", "--storage", str(storage),
                          "--name", "base"])
    assert code == 0
    run = storage / "base"
    for pattern in ("tuner.pkl", "experiment_state-*.json", "search_gen_state-*.json",
                    "nasq-searcher-state-*.json", "trials.csv"):
        newest(run, pattern)
    return run


@pytest.fixture(scope="module")
def jasq_run(ray_session, tmp_path_factory) -> tuple[Path, str]:
    """A tiny finished JASQ run and its best genome trained once by `nasq train` (model.pt, report.json)."""
    storage = tmp_path_factory.mktemp("jasq-runs")
    code = cli_main.main(["search", "jasq", "--dataset", "digits", "--data-limit", "300", "--cells", "1",
                          "--channels", "4", "--combinations", "2", "--train-steps", "2", "--batch-size", "32",
                          "--samples", "2", "--population", "2", "--sample-size", "1", "--storage",
                          str(storage), "--name", "jasq"])
    assert code == 0
    run = storage / "jasq"
    code = cli_main.main(["train", str(run), "--epochs", "0.2", "--batch-size", "32", "--out",
                          str(run / "good")])
    assert code == 0 and (run / "good" / "model.pt").is_file()
    import json

    best = json.loads((run / "good" / "report.json").read_text())["genome"]
    return run, best


@pytest.fixture()
def jasq_copy(jasq_run, tmp_path) -> tuple[Path, str]:
    run, best = jasq_run
    return copy_run(run, tmp_path / "jasq"), best


def _superscript(genome: str) -> str:
    """The genome with its first ASCII digit replaced by '¹' (str.isdigit() is True, int() fails)."""
    i = next(i for i, c in enumerate(genome) if c.isdigit())
    return genome[:i] + "\u00b9" + genome[i + 1:]


# --------------------------------------------------------------------------- nasq train

TRAIN_BAD = {
    "threads-0": (["--threads", "0"], ["--threads", ">= 1"]),
    "threads-negative": (["--threads", "-4"], ["--threads"]),
    "lr-negative": (["--lr", "-1"], ["--lr", "> 0"]),
    "lr-zero": (["--lr", "0"], ["--lr"]),
    "lr-nan": (["--lr", "nan"], ["--lr", "finite"]),
    "lr-inf": (["--lr", "inf"], ["--lr", "finite"]),
    "epochs-nan": (["--epochs", "nan"], ["--epochs", "finite"]),
    "epochs-zero": (["--epochs", "0"], ["--epochs"]),
    "batch-size-0": (["--batch-size", "0"], ["--batch-size"]),
    "seed-negative": (["--seed", "-1"], ["--seed"]),
    "diverging-lr": (["--lr", "1e30", "--epochs", "1"], ["diverged", "lower --lr"]),
}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("case", sorted(TRAIN_BAD))
def test_train_bad_option_keeps_previous_model(jasq_copy, capsys, case):
    """A bad option (or a diverging --lr) fails in one line and leaves the earlier trained model as it was."""
    run, best = jasq_copy
    flags, words = TRAIN_BAD[case]
    before = snapshot(run)
    code, _, err = run_cli(["train", run, "--genome", best, "--out", run / "good", *flags], capsys)
    assert_one_line(code, err, *words)
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.ray
def test_train_out_is_a_file(jasq_copy, capsys):
    run, best = jasq_copy
    target = run / "trials.csv"
    before = snapshot(run)
    code, _, err = run_cli(["train", run, "--genome", best, "--epochs", "0.1", "--out", target], capsys)
    assert_one_line(code, err, "is a file", "--out")
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.ray
def test_train_out_below_a_file(jasq_copy, capsys):
    run, best = jasq_copy
    before = snapshot(run)
    code, _, err = run_cli(["train", run, "--genome", best, "--epochs", "0.1", "--out",
                            run / "trials.csv" / "sub"], capsys)
    assert_one_line(code, err, "is a file")
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.ray
def test_train_genome_with_non_ascii_digit(jasq_copy, capsys):
    run, best = jasq_copy
    before = snapshot(run)
    code, _, err = run_cli(["train", run, "--genome", _superscript(best), "--epochs", "0.1"], capsys)
    assert_one_line(code, err, "'\u00b9'")  # names the bad token
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.ray
def test_train_good_run_replaces_model_atomically(jasq_copy, capsys):
    """The fixed path still trains: a good run rewrites model.pt and report.json, leaves no temp files."""
    run, best = jasq_copy
    old = (run / "good" / "model.pt").read_bytes()
    code, out, err = run_cli(["train", run, "--genome", best, "--epochs", "0.2", "--batch-size", "32",
                              "--seed", "1", "--out", run / "good"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (run / "good").iterdir()) == ["model.pt", "report.json"]
    assert (run / "good" / "model.pt").read_bytes() != old  # another seed, another model
    torch.load(run / "good" / "model.pt", weights_only=True)


# --------------------------------------------------------------------------- nasq export


@pytest.mark.slow
@pytest.mark.ray
def test_export_to_existing_directory_writes_inside_it(jasq_copy, capsys, tmp_path):
    """Decision: `--out DIR` of an existing folder writes DIR/<weights stem>.nasqz and nothing else."""
    run, best = jasq_copy
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    before = snapshot(out_dir)
    code, out, err = run_cli(["export", run, "--genome", best, "--checkpoint", run / "good" / "model.pt",
                              "--out", out_dir, "--verify"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt", "model.nasqz"]
    after = snapshot(out_dir)
    assert after["keep.txt"] == before["keep.txt"]
    assert str(out_dir / "model.nasqz") in out and "verified" in out


@pytest.fixture(scope="module")
def mobilenet_state(tmp_path_factory) -> tuple[Path, int]:
    """A real torchvision state dict (MobileNetV2, CIFAR stem) and its number of quantizable layers."""
    from nasq.models.torchvision_nets import build_torchvision, quantizable_layers

    net = build_torchvision("mobilenet_v2", 10, (3, 32, 32))
    path = tmp_path_factory.mktemp("tv") / "mbv2.pt"
    torch.save(net.state_dict(), path)
    return path, len(quantizable_layers(net))


def _policy(n: int, bad: str | None = None) -> str:
    widths = ["8"] * n
    if bad is not None:
        widths[1] = bad
    return ",".join(widths)


EXPORT_BAD = {
    "64-bit-layer": ("64", ["64", "1..16", "32"]),
    "zero-bit-layer": ("0", ["0", "1..16"]),
    "non-ascii-digit": ("\u00b9", ["ASCII"]),
    "empty-width": ("", ["integer widths"]),
}


@pytest.mark.parametrize("case", sorted(EXPORT_BAD))
def test_export_bad_bits_policy_writes_nothing(mobilenet_state, capsys, case):
    path, layers = mobilenet_state
    bad, words = EXPORT_BAD[case]
    before = snapshot(path.parent)
    code, _, err = run_cli(["export", path, "--model", "mobilenet_v2", "--bits-policy", _policy(layers, bad)],
                           capsys)
    assert_one_line(code, err, "--bits-policy", *words)
    assert snapshot(path.parent) == before


@pytest.mark.parametrize("bucket", ["0", "-3"])
def test_export_bad_bucket_size(mobilenet_state, capsys, bucket):
    path, layers = mobilenet_state
    before = snapshot(path.parent)
    code, _, err = run_cli(["export", path, "--model", "mobilenet_v2", "--bits-policy", _policy(layers),
                            "--bucket-size", bucket], capsys)
    assert_one_line(code, err, "bucket size")
    assert snapshot(path.parent) == before


def test_export_out_is_the_weights_file(mobilenet_state, capsys):
    path, layers = mobilenet_state
    before = snapshot(path.parent)
    code, _, err = run_cli(["export", path, "--model", "mobilenet_v2", "--bits-policy", _policy(layers),
                            "--out", path], capsys)
    assert_one_line(code, err, "weights file itself")
    assert snapshot(path.parent) == before


@pytest.mark.slow
@pytest.mark.ray
def test_export_jasq_genome_with_non_ascii_digit(jasq_copy, capsys):
    run, best = jasq_copy
    before = snapshot(run)
    code, _, err = run_cli(["export", run, "--genome", _superscript(best), "--checkpoint",
                            run / "good" / "model.pt"], capsys)
    assert_one_line(code, err, "'\u00b9'")  # names the bad token
    assert snapshot(run) == before


# --------------------------------------------------------------------------- nasq latency


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Path:
    """A tiny real predictor built by `nasq latency build` (measured on this CPU, no Ray)."""
    path = tmp_path_factory.mktemp("lat") / "tiny.json"
    code = cli_main.main(["latency", "build", "--space", "tiny", "--samples", "2", "--calib-chains", "0",
                          "--out", str(path), *FAST])
    assert code == 0 and path.is_file()
    return path


@pytest.fixture()
def bad_onnx(tmp_path) -> dict[str, Path]:
    garbage, empty = tmp_path / "garbage.onnx", tmp_path / "empty.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    empty.write_bytes(b"")
    (tmp_path / "dir.onnx").mkdir()
    return {"garbage": garbage, "empty": empty, "dir": tmp_path / "dir.onnx"}


@pytest.mark.parametrize("kind,words", [("garbage", ["not a valid ONNX model"]), ("empty", ["is empty"]),
                                        ("dir", ["directory"])])
def test_measure_bad_onnx_file(bad_onnx, capsys, kind, words):
    code, out, err = run_cli(["latency", "measure", bad_onnx[kind], "--repeats", "3", "--warmup", "0"],
                             capsys)
    assert_one_line(code, err, str(bad_onnx[kind]), *words)
    assert out == ""


@pytest.mark.parametrize("flags,words", [(["--threads", "-2"], ["threads", ">= 1"]),
                                         (["--threads", "0"], ["threads"]),
                                         (["--repeats", "0"], ["repeats"])])
def test_measure_bad_counts(capsys, flags, words):
    code, out, err = run_cli(["latency", "measure", "mbv1-r7-i16-o16-k3-s1-e1", "--warmup", "0", *flags],
                             capsys)
    assert_one_line(code, err, *words)
    assert out == ""


@pytest.mark.parametrize("flags,words", [(["--models", "0"], ["--models", ">= 1"]),
                                         (["--models", "-4"], ["--models"]),
                                         (["--seed", "-1"], ["--seed"]),
                                         (["--space", "huge"], ["block space", "tiny"])])
def test_eval_bad_values_write_nothing(predictor, capsys, tmp_path, flags, words):
    out_dir = tmp_path / "eval"
    code, out, err = run_cli(["latency", "eval", "--predictor", predictor, "--out", out_dir, *FAST, *flags],
                             capsys)
    assert_one_line(code, err, *words)
    assert not out_dir.exists()


def test_eval_out_is_a_file(predictor, capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    code, _, err = run_cli(["latency", "eval", "--predictor", predictor, "--models", "1", "--out", target,
                            *FAST], capsys)
    assert_one_line(code, err, "is a file")
    assert target.read_text() == "x"


@pytest.mark.parametrize("flags,words", [(["--calib-chains", "-5"], ["--calib-chains", ">= 0"]),
                                         (["--samples", "1"], ["--samples", ">= 2"]),
                                         (["--seed", "-3"], ["--seed"])])
def test_build_bad_counts_write_nothing(capsys, tmp_path, flags, words):
    out = tmp_path / "p.json"
    code, _, err = run_cli(["latency", "build", "--space", "tiny", "--samples", "2", "--out", out, *FAST,
                            *flags], capsys)
    assert_one_line(code, err, *words)
    assert list(tmp_path.iterdir()) == []


def test_build_out_is_a_directory(capsys, tmp_path):
    code, _, err = run_cli(["latency", "build", "--space", "tiny", "--samples", "2", "--calib-chains", "0",
                            "--out", tmp_path, *FAST], capsys)
    assert_one_line(code, err, "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_build_more_actors_than_cpus_is_refused_before_ray(capsys, tmp_path, monkeypatch):
    """64 measuring actors on a 2-CPU local Ray would never be scheduled: refused up front, not a hang."""
    monkeypatch.setenv("NASQ_RAY_NUM_CPUS", "2")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, _, err = run_cli(["latency", "build", "--space", "tiny", "--samples", "2", "--actors", "64",
                            "--out", tmp_path / "p.json"], capsys)
    assert_one_line(code, err, "--actors 64", "2")


# --------------------------------------------------------------------------- nasq report


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("top", ["0", "-3"])
def test_report_bad_top(nb201_run, tmp_path, capsys, top):
    run = copy_run(nb201_run, tmp_path / "run")
    before = snapshot(run)
    code, out, err = run_cli(["report", run, "--top", top], capsys)
    assert_one_line(code, err, "--top", ">= 1")
    assert snapshot(run) == before and out == ""


@pytest.mark.slow
@pytest.mark.ray
def test_report_of_run_killed_before_first_snapshot(nb201_run, tmp_path, capsys):
    """Only nasq-run.json is there (the driver died before Tune's first snapshot)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy2(nb201_run / "nasq-run.json", run / "nasq-run.json")
    before = snapshot(run)
    code, _, err = run_cli(["report", run], capsys)
    assert_one_line(code, err, "no Tune experiment snapshot", "nasq search")
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.ray
def test_report_of_truncated_experiment_state(nb201_run, tmp_path, capsys):
    run = copy_run(nb201_run, tmp_path / "run")
    state = newest(run, "experiment_state-*.json")
    truncate(state)
    before = snapshot(run)
    code, _, err = run_cli(["report", run], capsys)
    assert_one_line(code, err, state.name, "truncated")
    assert snapshot(run) == before


# --------------------------------------------------------------------------- nasq resume


def _garbage(path: Path) -> None:
    path.write_bytes(b"garbage, not a pickle\n")


RESUME_BAD = {
    "garbage-tuner-pkl": ("tuner.pkl", _garbage, ["tuner.pkl"]),
    "truncated-tuner-pkl": ("tuner.pkl", truncate, ["tuner.pkl", "truncated"]),
    "truncated-experiment-state": ("experiment_state-*.json", truncate, ["experiment_state-", "truncated"]),
    "truncated-search-gen-state": ("search_gen_state-*.json", truncate, ["search_gen_state-", "truncated"]),
    "truncated-searcher-state": ("nasq-searcher-state-*.json", truncate, ["nasq-searcher-state-"]),
}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("case", sorted(RESUME_BAD))
def test_resume_of_corrupt_run_changes_nothing(nb201_run, tmp_path, case):
    """One line before Ray starts (a fresh process shows any Ray output), and no file of the run changed."""
    pattern, damage, words = RESUME_BAD[case]
    run = copy_run(nb201_run, tmp_path / "run")
    damage(newest(run, pattern))
    before = snapshot(run)
    code, out, err = run_fresh(["resume", run])
    assert_one_line(code, err, *words)
    assert "Ray" not in out  # no dashboard line: Ray never started
    assert snapshot(run) == before


# --------------------------------------------------------------------------- data sets (npz) through the CLI


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _good_arrays(n: int = 60) -> dict:
    return {"x": np.zeros((n, 4, 4, 1), np.uint8), "y": np.repeat(np.arange(3), n // 3)}


def _label(value: int):
    def make(path: Path) -> Path:
        arrays = _good_arrays()
        arrays["y"] = arrays["y"].astype(np.int64)
        arrays["y"][0] = value
        return _npz(path, **arrays)
    return make


def _truncated(path: Path) -> Path:
    _npz(path, **_good_arrays(600))
    truncate(path, 0.6)
    return path


def _npy(path: Path) -> Path:
    np.save(path, np.zeros((4, 4), np.uint8))
    return Path(str(path) + ".npy").rename(path)


NPZ_BAD = {
    "label-1e9": (_label(10**9), ["label 1000000000", "renumber"]),
    "negative-label": (_label(-1), ["negative label -1"]),
    "truncated": (_truncated, ["cannot read npz", "truncated"]),
    "npy-not-npz": (_npy, ["not an npz archive"]),
    "missing-y": (lambda p: _npz(p, x=_good_arrays()["x"]), ["lacks key", "'y'"]),
    "float-images": (lambda p: _npz(p, x=np.zeros((60, 4, 4, 1), np.float32), y=_good_arrays()["y"]),
                     ["dtype float32", "uint8"]),
    "2d-images": (lambda p: _npz(p, x=np.zeros((60, 4), np.uint8), y=_good_arrays()["y"]), ["shape"]),
    "length-mismatch": (lambda p: _npz(p, x=_good_arrays()["x"], y=np.zeros(59, np.int64)),
                        ["60 images but 59 labels"]),
    "directory": (lambda p: (p.mkdir(), p)[1], ["is a directory"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_BAD))
def test_bad_npz_is_one_line_before_any_run_folder(tmp_path, capsys, case):
    """`nasq search jasq --dataset npz:BAD` answers in one line and makes no run folder (nasq.data checks)."""
    make, words = NPZ_BAD[case]
    path = make(tmp_path / "data.npz")
    code, _, err = run_cli(["search", "jasq", "--dataset", f"npz:{path}", "--samples", "1", "--population",
                            "2", "--sample-size", "1", "--storage", tmp_path / "runs", "--name", "bad"], capsys)
    assert_one_line(code, err, *words)
    assert not (tmp_path / "runs" / "bad").exists()
