"""``nasq supernet train|eval``, ``nasq resume`` and ``nasq report`` of a supernet run (SpaceEvo §5):
one-line errors before Ray, and a driver SIGKILLed mid-training that resumes at its next epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nasq.cli.main import main
from nasq.quant.lsq import LsqActQuant, LsqWeightQuant, set_quant
from nasq.settings import SupernetSettings
from nasq.supernet import Supernet
from nasq.supernet.launch import load_checkpoint_state, state_digest
from nasq.supernet.run import RUN_FILE, SNAPSHOT_FILE, latest_checkpoint, read_run_settings, write_run_file

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
SPACE = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck:32-40"
TINY = ["--space", SPACE, "--hyperspace", "spaceevo-tiny", "--data-limit", "300", "--batch-size", "16",
        "--bn-batches", "1", "--n-random", "1", "--workers", "2"]
TRAIN = ["supernet", "train", *TINY]
STEPS = 6  # 300 digits -> 210 train -> 105 per worker -> 6 batches of 16


def _one_line_error(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nasq: error:") and "\n" not in err and match in err, err


@pytest.mark.parametrize("argv, match", [
    (["supernet", "train"], "space (--space) is required"),
    (["supernet", "train", "--space", "mbv2:16-40"], "has 1 stages"),
    (["supernet", "train", "--space", "warp:16-24|mbv2:24-32|mbv2:32-40", "--hyperspace", "spaceevo-tiny"],
     "warp"),
    ([*TRAIN, "--device", "gpu"], "--device"),
    ([*TRAIN, "--epochs", "0", "--qat-epochs", "0"], "epochs + qat_epochs"),
    ([*TRAIN, "--lr", "-1"], "--lr"),
    ([*TRAIN, "--data", "npz:/nonexistent.npz"], "nonexistent"),
    ([*TRAIN, "--from-search", "/nonexistent"], "give --space or --from-search, not both"),
    (["supernet", "train", "--from-search", "/nonexistent"], "/nonexistent"),
    (["supernet", "eval", "/nonexistent", "--subnet", "largest"], "nasq-supernet.json"),
])
def test_bad_input_is_one_line_before_ray(argv, match, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started for a bad input"))
    _one_line_error(argv, capsys, match)


def test_run_file_keeps_the_first_settings(tmp_path, capsys):
    same = dict(space=SPACE, hyperspace="spaceevo-tiny", data_limit=300, batch_size=16, bn_batches=1, n_random=1)
    write_run_file(tmp_path / "r", SupernetSettings(**same, epochs=1))
    write_run_file(tmp_path / "r", SupernetSettings(**same, epochs=5))
    assert read_run_settings(tmp_path / "r").epochs == 5  # a longer run of the same supernet is fine
    _one_line_error([*TRAIN, "--lr", "0.2", "--storage", str(tmp_path), "--name", "r"],
                    capsys, "other lr")
    (tmp_path / "r" / RUN_FILE).write_text("{not json")
    _one_line_error(["supernet", "eval", str(tmp_path / "r"), "--subnet", "largest"], capsys, "unreadable")
    _one_line_error(["resume", str(tmp_path / "r")], capsys, "unreadable")


def _env() -> dict:
    return {**os.environ, "NASQ_RAY_DASHBOARD": "0", "NASQ_RAY_NUM_CPUS": "2", "PYTHONUNBUFFERED": "1"}


def _snapshot(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / SNAPSHOT_FILE).read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then its process group (the local Ray it started)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def killed_and_resumed(ray_session, tmp_path_factory):
    """`nasq supernet train` (2 fp32 + 1 LSQ+ epochs, 2 workers) SIGKILLed after its first checkpoint, then
    `nasq resume` in this process: (run directory, the last checkpointed metrics before the kill, output)."""
    tmp = tmp_path_factory.mktemp("supernet")
    log, run_dir = tmp / "train.log", tmp / "run"
    argv = [*TRAIN, "--epochs", "2", "--qat-epochs", "1", "--storage", str(tmp), "--name", "run"]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)
    deadline = time.monotonic() + 300
    while not _snapshot(run_dir):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in 300 s:\n" + log.read_text()[-3000:]
        time.sleep(0.2)
    _kill_group(proc)
    done = _snapshot(run_dir)[-1]["metrics"]
    assert done["epoch"] < 2, "the run finished before the kill; nothing to resume"
    import io
    from contextlib import redirect_stdout

    text = io.StringIO()
    with redirect_stdout(text):
        assert main(["resume", str(run_dir)]) == 0
    return run_dir, done, text.getvalue()


@pytest.mark.slow
@pytest.mark.ray
def test_resume_continues_at_the_next_epoch_with_the_checkpointed_weights(killed_and_resumed):
    run_dir, done, text = killed_and_resumed
    assert "nasq: trained" in text and "resuming" in text
    last = _snapshot(run_dir)[-1]["metrics"]
    assert last["epoch"] == 2 and last["phase"] == "qat" and last["global_step"] == 3 * STEPS
    assert last["start_epoch"] == done["epoch"] + 1  # no restart from epoch 0
    assert last["start_digest"] == done["weight_digests"][0]  # the weights continue from the checkpoint
    assert len(set(last["weight_digests"])) == 1 and last["weight_digests"][0] != last["start_digest"]
    state = load_checkpoint_state(str(latest_checkpoint(run_dir)))
    assert state["step"] == 3 * STEPS and state["scheduler"]["last_epoch"] == STEPS  # the QAT schedule's own
    assert state["optimizer"]["state"]
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == SupernetSettings.qat_lr
    net = Supernet.from_string(SPACE, "spaceevo-tiny")
    net.load_state_dict(state["model"])  # strict: every key fits a fresh supernet
    assert state_digest(net) == last["weight_digests"][0]  # the checkpoint is exactly rank 0's model
    _assert_no_quantizer_initialises_later(net)


@pytest.mark.slow
@pytest.mark.ray
def test_report_has_every_epoch_and_eval_measures_int8(killed_and_resumed, capsys):
    run_dir, _, _ = killed_and_resumed
    assert main(["report", str(run_dir)]) == 0
    frame = pd.read_csv(run_dir / "supernet_metrics.csv")
    assert frame["epoch"].tolist() == [0, 1, 2]  # the epochs before the kill are kept
    assert frame["global_step"].tolist() == [STEPS, 2 * STEPS, 3 * STEPS]
    assert frame["phase"].tolist() == ["fp32", "fp32", "qat"]
    assert frame[["acc_largest", "acc_smallest"]].stack().between(0, 1).all()
    assert frame[["loss_largest", "loss_smallest", "loss_random_0"]].notna().all().all()
    assert (run_dir / "supernet_curves.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["supernet", "eval", str(run_dir), "--subnet", "largest"]) == 0
    text = capsys.readouterr().out
    assert "INT8 fake-quant" in text and "not trained" not in text and "test accuracy on 60 images" in text


def _uninitialised(net: Supernet) -> set[str]:
    return {n for n, m in net.named_modules() if isinstance(m, (LsqActQuant, LsqWeightQuant))
            and not int(m.initialized)}


def _assert_no_quantizer_initialises_later(net: Supernet) -> None:
    """Every quantizer a subnet uses was initialised at the phase switch (alike on all workers), none
    lazily afterwards from one worker's batch."""
    left = _uninitialised(net)
    assert len(left) < sum(isinstance(m, LsqActQuant) for m in net.modules()) // 4
    set_quant(net, True)
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for sub in [net.largest(), net.smallest(), *net.sample(rng, 24)]:
            net.set_active(sub)
            net.train()
            net(torch.randn(4, 3, 16, 16))
    assert _uninitialised(net) == left
