"""`nasq pipeline spaceevo` (SpaceEvo §4 + §5) on the tiny twin: the driver is SIGKILLed during the supernet
phase, and `nasq resume` finishes it without redoing the finished phases (predictor, table, space search),
continuing the supernet at its next epoch and then running the subnet search of every limit."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_resume_kill import _kill
from test_spaceevo_chain import CHAIN, SEARCH

from nasq.cli.main import main
from nasq.errors import CheckpointError

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
LIMITS = [1000.0]  # one subnet search: the limit is loose (the tiny twin's subnets take well under 1 s)
PIPE = ["--supernet-epochs", "1", "--supernet-qat-epochs", "1", "--supernet-batch-size", "16",
        "--subnet-samples", "4", "--subnet-population", "3", "--subnet-sample-size", "2",
        "--export-format", "onnx", "--export-repeats", "3"]


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _snapshot(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []


def test_bad_pipeline_inputs_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({**SEARCH, "experiment_config": CHAIN}))
    for extra, needle in ((["--supernet-lr", "0"], "--supernet-lr"), (["--subnet-population", "0"],
                                                                       "--subnet-population"),
                          (["--supernet-workers", "64"], "--supernet-workers 64")):
        assert main(["pipeline", "spaceevo", "--config", str(cfg), "--storage", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("nasq: error:") and "\n" not in err and needle in err, err
    assert not any(tmp_path.glob("*/pipeline.json"))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "pipeline.json").write_text("{}")
    from nasq.pipeline import read_pipeline

    with pytest.raises(CheckpointError, match="not a nasq pipeline progress file"):
        read_pipeline(tmp_path / "x")


@pytest.mark.slow
@pytest.mark.ray
def test_pipeline_killed_in_the_supernet_phase_resumes_without_redoing_phases(ray_session, tmp_path, capsys):
    from nasq.pipeline import read_pipeline
    from nasq.spaceevo_chain import CHAIN_LOG, predictor_path, read_chain

    cfg = tmp_path / "p.yaml"
    chain = {**CHAIN, "data_limit": 200, "constraints_ms": LIMITS}
    cfg.write_text(yaml.safe_dump({**SEARCH, "experiment_config": chain}))
    run = tmp_path / "runs" / "p"
    env = {**os.environ, "NASQ_RAY_DASHBOARD": "0", "NASQ_RAY_NUM_CPUS": "2", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "pipe.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CLI, "pipeline", "spaceevo", "--config", str(cfg),
                                 "--storage", str(tmp_path / "runs"), "--name", "p", *PIPE], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while not _snapshot(run / "supernet"):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no supernet checkpoint in 600 s:\n" + log.read_text()[-3000:]
        time.sleep(0.2)
    _kill(proc)  # the driver, then its process group (the local Ray it started)
    killed_at = _snapshot(run / "supernet")[-1]["metrics"]
    assert killed_at["epoch"] < 1, "the supernet finished before the kill"
    doc = read_pipeline(run)
    assert [(p["name"], p["done"]) for p in doc["phases"]] == [("chain", True), ("supernet", False),
                                                               ("subnets", False), ("export", False)]
    assert all(p["done"] for p in read_chain(run)["phases"])
    before = _digest(predictor_path(run)), _digest(run / "lut" / "lut.csv"), _digest(run / "spaceevo_best.json")

    assert main(["resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert (_digest(predictor_path(run)), _digest(run / "lut" / "lut.csv"),
            _digest(run / "spaceevo_best.json")) == before  # not measured, trained or searched again
    after = (run / CHAIN_LOG).read_text().split("phase 4/6 supernet: started")[-1]
    assert "phase 1/3" not in after and "phase 3/3" not in after
    last = _snapshot(run / "supernet")[-1]["metrics"]
    assert last["epoch"] == 1 and last["start_epoch"] == killed_at["epoch"] + 1  # continued, not restarted
    assert last["start_digest"] == killed_at["weight_digests"][0]
    assert all(p["done"] for p in read_pipeline(run)["phases"])
    summary = pd.read_csv(run / "subnets" / "subnets.csv")
    assert summary["max_latency_ms"].tolist() == LIMITS
    assert summary["genome"].notna().all() and (summary["latency_ms"] <= summary["max_latency_ms"]).all()
    space = json.loads((run / "spaceevo_best.json").read_text())["genome"]
    assert json.loads((run / "supernet" / "nasq-supernet.json").read_text())["settings"]["space"] == space
    assert "pipeline done" in out
    deployed = json.loads((run / "export" / "deploy.json").read_text())
    assert {r["subnet"] for r in deployed} == set(summary["genome"]) and {r["format"] for r in deployed} == {"onnx"}
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 and 0 <= r["file_int8_test_acc"] <= 1
               for r in deployed)
    _check_supernet_run(run / "supernet", capsys)


STEPS = 4  # 200 digits -> 140 train -> 70 per worker -> 4 batches of 16


def _check_supernet_run(sup: Path, capsys) -> None:
    """Phase 4's Ray Train run: checkpoint contents, identical workers, curves, eval, a finished resume."""
    import numpy as np
    import torch

    from nasq.quant.lsq import LsqActQuant, LsqWeightQuant, set_quant
    from nasq.supernet import Supernet
    from nasq.supernet.launch import load_checkpoint_state, state_digest
    from nasq.supernet.run import latest_checkpoint, read_run_settings

    last = _snapshot(sup)[-1]["metrics"]
    assert last["phase"] == "qat" and last["global_step"] == 2 * STEPS
    assert len(set(last["weight_digests"])) == 1 and last["weight_digests"][0] != last["start_digest"]
    state = load_checkpoint_state(str(latest_checkpoint(sup)))  # weights_only=True
    assert state["step"] == 2 * STEPS and state["scheduler"]["last_epoch"] == STEPS  # the QAT schedule's own
    assert state["optimizer"]["state"] and state["optimizer"]["param_groups"][0]["initial_lr"] == 0.01
    s = read_run_settings(sup)
    net = Supernet.from_string(s.space, s.hyperspace)
    net.load_state_dict(state["model"])  # strict: every key fits a fresh supernet
    assert state_digest(net) == last["weight_digests"][0]  # the checkpoint is exactly rank 0's model
    quant = [m for m in net.modules() if isinstance(m, (LsqActQuant, LsqWeightQuant))]
    left = {id(m) for m in quant if not int(m.initialized)}  # LSQ+ started from one batch on every worker
    assert len(left) < len(quant) // 4
    set_quant(net, True)
    with torch.no_grad():  # no quantizer initialises itself later from one worker's batch
        for sub in [net.largest(), net.smallest(), *net.sample(np.random.default_rng(7), 24)]:
            net.set_active(sub)
            net.train()
            net(torch.randn(4, 3, 16, 16))
    assert {id(m) for m in quant if not int(m.initialized)} == left
    capsys.readouterr()
    assert main(["report", str(sup)]) == 0
    frame = pd.read_csv(sup / "supernet_metrics.csv")
    assert frame["epoch"].tolist() == [0, 1]  # the epoch before the kill is kept
    assert frame["global_step"].tolist() == [STEPS, 2 * STEPS]
    assert frame["phase"].tolist() == ["fp32", "qat"]
    assert frame[["acc_largest", "acc_smallest"]].stack().between(0, 1).all()
    assert frame[["loss_largest", "loss_smallest", "loss_random_0"]].notna().all().all()
    assert (sup / "supernet_curves.png").stat().st_size > 1000
    assert main(["supernet", "eval", str(sup), "--subnet", "largest"]) == 0
    text = capsys.readouterr().out
    assert "INT8 fake-quant" in text and "not trained" not in text and "test accuracy on 40 images" in text
    assert main(["resume", str(sup)]) == 0  # a finished training is not started again
    assert "all epochs were done already" in capsys.readouterr().out
    assert _snapshot(sup)[-1]["metrics"]["global_step"] == 2 * STEPS
