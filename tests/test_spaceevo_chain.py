"""The whole SpaceEvo chain (§4) as one resumable workflow: predictor build → LUT build → space search.

`nasq search spaceevo --data digits` without --lut/--predictor on the tiny hyperspace, with the cheapest
settings that still build a real INT8 predictor (ONNX Runtime measurements), a real accuracy table over
every (stage, block type) (one training step each) and a short real Ray Tune search. The run stops after
the table (``--stop-after lut``), so its chain.json genuinely says the search is not done; ``nasq resume``
must then skip the finished phases (the predictor file is not touched) and run only the search.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from nasq.cli.main import main
from nasq.errors import CheckpointError
from nasq.settings import LutSettings, SearchSettings, SpaceEvoSettings

# cheapest settings the chain allows on spaceevo-tiny (the search needs the table of every block type)
CHAIN = {"hyperspace": "spaceevo-tiny", "dataset": "digits", "data_limit": 100,
         "constraints_ms": [2.0, 1000.0], "qt_subnets": 40, "top_k": 3,
         "predictor_samples": 2, "predictor_calib_chains": 0, "predictor_repeats": 2, "predictor_warmup": 0,
         "predictor_actors": 0,
         "lut_teacher_type": "mbv1", "lut_teacher_steps": 0, "lut_steps": 1, "lut_qat_steps": 0,
         "lut_batch_size": 8, "lut_eval_examples": 4, "lut_bn_batches": 0, "lut_mixed_rows": 0}
SEARCH = {"population_size": 7, "sample_size": 2, "samples": 7}  # the homogeneous spaces


def _config(tmp: Path, **changes: object) -> Path:
    path = tmp / "chain.yaml"
    path.write_text(yaml.safe_dump({**SEARCH, "experiment_config": {**CHAIN, **changes}}))
    return path


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.mark.parametrize("argv, needle", [
    (["--data", "digits", "--lut", "/tmp/some-lut"], "--lut needs --predictor FILE too"),
    (["--data", "digits", "--predictor", "/tmp/p.json"], "--predictor needs --lut DIR too"),
    (["--data", "mnist"], "unknown data set 'mnist'"),
    (["--data", "digits", "--lut-steps", "0"], "--lut-steps"),
    (["--data", "digits", "--predictor-actors", "64"], "--predictor-actors 64"),
    (["--data", "digits", "--stop-after", "search"], "--stop-after 'search'"),
    (["--data", "digits", "--lut-teacher-checkpoint", "/nonexistent/t.pt"], "--lut-teacher-checkpoint"),
    ([], "or --data digits|cifar10|npz:PATH"),
])
def test_bad_chain_inputs_are_one_line_before_ray(tmp_path, capsys, argv, needle):
    """Bad values fail as one `nasq: error:` line before Ray starts; no run folder is left behind."""
    cfg = _config(tmp_path)
    doc = yaml.safe_load(cfg.read_text())
    if not argv:  # neither the chain's data nor --lut/--predictor
        del doc["experiment_config"]["dataset"], doc["experiment_config"]["data_limit"]
    cfg.write_text(yaml.safe_dump(doc))
    code = main(["search", "spaceevo", "--config", str(cfg), *argv, "--storage", str(tmp_path / "runs"),
                 "--name", "bad"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("nasq: error:") and needle in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_chain_settings_map_onto_the_builds():
    """The chain's predictor counts default to `nasq latency build`'s, its lut_* fields are LutSettings'."""
    from nasq.cli.latency import build_options
    from nasq.spaceevo_chain import predictor_options

    cli = build_options()
    plain = SpaceEvoSettings(dataset="digits")
    assert (plain.predictor_samples, plain.predictor_calib_chains, plain.predictor_repeats,
            plain.predictor_warmup, plain.predictor_actors, plain.predictor_seed) == (
        cli.samples, cli.calib_chains, cli.repeats, cli.warmup, cli.actors, cli.seed)
    s = SpaceEvoSettings.from_dict({k: v for k, v in CHAIN.items() if k != "constraints_ms"})
    lut = s.lut_settings()
    assert lut == LutSettings(dataset="digits", data_limit=100, hyperspace="spaceevo-tiny",
                              teacher_type="mbv1", teacher_steps=0, steps=1, qat_steps=0, batch_size=8,
                              eval_examples=4, bn_batches=0, mixed_rows=0)
    opts = predictor_options(s, Path("/tmp/p.json"))
    assert (opts.engine, opts.hyperspace, opts.samples, opts.calib_chains, opts.repeats, opts.actors) == (
        "ort-int8", "spaceevo-tiny", 2, 0, 2, 0)
    assert SpaceEvoSettings(dataset="digits").is_chain
    assert not SpaceEvoSettings(dataset="digits", lut="/a", predictor="/b").is_chain


def test_resume_refuses_a_corrupt_chain_file(tmp_path):
    """A chain run whose chain.json is not a progress file is one CheckpointError line (before Ray)."""
    from nasq.runfile import write_run_file
    from nasq.spaceevo_chain import resume_chain

    run = tmp_path / "run"
    run.mkdir()
    write_run_file(run, SearchSettings("spaceevo", SpaceEvoSettings(**{**CHAIN, "constraints_ms": (2.0,)}),
                                       name="run"))
    (run / "chain.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a SpaceEvo chain progress file") as err:
        resume_chain(run)
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.ray
def test_chain_stops_after_the_table_and_resumes_with_the_search_only(ray_session, tmp_path, capsys):
    """Phases 1-2 run and are recorded; resume skips them (predictor untouched) and finishes the search."""
    from nasq.spaceevo_chain import CHAIN_LOG, predictor_path, read_chain

    cfg = _config(tmp_path)
    storage = tmp_path / "runs"
    assert main(["search", "spaceevo", "--config", str(cfg), "--storage", str(storage), "--name", "chain",
                 "--stop-after", "lut"]) == 0
    run = storage / "chain"
    out = capsys.readouterr().out
    assert f"nasq resume {run}" in out
    doc = read_chain(run)
    assert [(p["name"], p["done"]) for p in doc["phases"]] == [("predictor", True), ("lut", True),
                                                                ("search", False)]
    pred = predictor_path(run)
    assert doc["phases"][0]["output"] == str(pred) and doc["phases"][1]["output"] == str(run / "lut")
    assert all(p["seconds"] > 0 and p["finished_at"] >= p["started_at"] for p in doc["phases"][:2])
    assert not (run / "predictor.partial").exists() and not (run / "lut.partial").exists()
    meta = json.loads(pred.read_text())["meta"]
    assert meta["space"] == "spaceevo-tiny" and meta["samples"] == 2 and meta["repeats"] == 2
    lut = json.loads((run / "lut" / "lut.json").read_text())
    assert lut["hyperspace"] == "spaceevo-tiny" and len(lut["seconds"]) == 3 * 7  # every (stage, type)
    assert lut["settings"]["steps"] == 1 and lut["settings"]["dataset"] == "digits"
    assert not (run / "trials.csv").exists()
    before = _digest(pred), _digest(run / "lut" / "lut.csv")

    assert main(["resume", str(run)]) == 0
    assert (_digest(pred), _digest(run / "lut" / "lut.csv")) == before  # neither measured nor trained again
    out = capsys.readouterr().out
    assert "phase 1/3 predictor: done earlier, skipped" in out
    assert "phase 2/3 lut: done earlier, skipped" in out
    log = (run / CHAIN_LOG).read_text()
    assert "resuming the SpaceEvo chain at phase search" in log and log.count("done earlier, skipped") == 2
    assert "phase 1/3 predictor: started" not in log.split("resuming")[1]
    doc = read_chain(run)
    assert [p["done"] for p in doc["phases"]] == [True, True, True] and doc["phases"][2]["seconds"] > 0
    settings = json.loads((run / "nasq-run.json").read_text())["settings"]["experiment_config"]
    assert settings["lut"] == str(run / "lut") and settings["predictor"] == str(pred)
    best = json.loads((run / "spaceevo_best.json").read_text())
    assert best["qt_score"] > 0 and best["limits_ms"] == [2.0, 1000.0]
    assert (run / "spaceevo_qt_curve.csv").is_file() and "best space:" in out

    assert main(["resume", str(run)]) == 0  # a finished chain: every phase skipped, the report rewritten
    assert capsys.readouterr().out.count("done earlier, skipped") == 3
