"""``nasq latency build|predict|eval|measure`` end to end on the tiny block space (real measurements)."""

from __future__ import annotations

import json

import pytest

import nasq.cli.main as cli_main
from nasq.latency.predictor import LatencyPredictor

FAST = ["--actors", "0", "--repeats", "5", "--warmup", "1"]


def run(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the real ``nasq`` entry point in-process."""
    code = cli_main.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny predictor built through the CLI."""
    path = tmp_path_factory.mktemp("cli") / "tiny.json"
    code = cli_main.main(["latency", "build", "--space", "tiny", "--samples", "8", "--calib-chains", "3",
                          "--out", str(path), *FAST])
    assert code == 0
    return path


def test_build_writes_predictor_and_data_sets(built):
    pred = LatencyPredictor.load(built)
    assert len(pred.table) >= 8 + 2 + 4  # body blocks + tiny stems and heads
    assert pred.meta["space"] == "tiny" and pred.overhead["chains"] == 3
    blocks = built.parent / "tiny.blocks.csv"
    first = blocks.read_text().splitlines()[0]
    assert first.startswith("# ") and json.loads(first[2:])["fingerprint"] == pred.fingerprint
    assert (built.parent / "tiny.chains.csv").exists()


def test_predict_prints_table_and_regressor_values(built, monkeypatch, capsys):
    pred = LatencyPredictor.load(built)
    seen = sorted(pred.table)[0]
    unseen = "mbv2-r14-i16-o24-k5-s2-e6"
    assert unseen not in pred.table
    code, out, _ = run(["latency", "predict", "--predictor", str(built), seen, unseen], monkeypatch, capsys)
    assert code == 0
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert lines[0][0] == seen and lines[0][2] == "table"
    assert float(lines[0][1].split()[0]) == pytest.approx(pred.table[seen], rel=1e-5)
    assert lines[1][2] == "regressor" and float(lines[1][1].split()[0]) > 0


def test_predict_bad_key_is_one_error_line(built, monkeypatch, capsys):
    code, out, err = run(["latency", "predict", "--predictor", str(built), "mbv2-r14-i16-o24-k5-s2-e6",
                          "mbv2-r14-i16-o24-k4-s1-e6"], monkeypatch, capsys)
    assert code == 2 and out == ""  # nothing printed before the bad key is reported
    assert err.count("\n") == 1 and err.startswith("nasq: error:") and "'k4'" in err and "k3" in err


def test_predict_missing_predictor_names_the_fix(tmp_path, monkeypatch, capsys):
    code, _, err = run(["latency", "predict", "--predictor", str(tmp_path / "none.json"),
                        "mbv1-r7-i16-o16-k3-s1-e1"], monkeypatch, capsys)
    assert code == 2 and "nasq latency build" in err


def test_build_unknown_space_is_an_error(tmp_path, monkeypatch, capsys):
    code, _, err = run(["latency", "build", "--space", "huge", "--out", str(tmp_path / "p.json"), *FAST],
                       monkeypatch, capsys)
    assert code == 2 and "spaceevo-blocks" in err and "tiny" in err


@pytest.mark.slow
def test_eval_writes_table_json_and_png(built, tmp_path, monkeypatch, capsys):
    code, out, _ = run(["latency", "eval", "--predictor", str(built), "--models", "3", "--out", str(tmp_path),
                        *FAST], monkeypatch, capsys)
    assert code == 0 and "within ±10%" in out
    report = json.loads((tmp_path / "tiny.eval.json").read_text())
    assert report["metrics"]["n"] == 3 and len(report["models"]) == 3
    assert all(m["measured_ms"] > 0 and m["predicted_ms"] > 0 for m in report["models"])
    assert (tmp_path / "tiny.eval.png").stat().st_size > 1000


def test_measure_a_block_key(monkeypatch, capsys):
    code, out, _ = run(["latency", "measure", "mbv1-r7-i16-o16-k3-s1-e1", "--repeats", "5", "--warmup", "1"],
                       monkeypatch, capsys)
    assert code == 0 and out.startswith("mbv1-r7-i16-o16-k3-s1-e1\tort-int8\tmedian ")
