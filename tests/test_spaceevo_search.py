"""`nasq search spaceevo` on the tiny twin, end to end through real Ray Tune (SpaceEvo §4.2, §4.4).

A hand-made accuracy table in the contract format (``test_bkd_table.write_tiny_lut``: values are a
deterministic function of the setting, 40 % of the settings written) and a real latency predictor
(blocks of the tiny hyperspace measured here with ONNX Runtime INT8, then fitted) feed a short aging
evolution. The checks are independent of the search code: proposal order from Tune's trial tags, the Q-T
score recomputed by the plain (Ray-free) classes, and the paper's two children per parent read off the
genomes.
"""

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
from test_bkd_table import write_tiny_lut

from nasq.bkd.table import AccuracyLUT
from nasq.cli.main import main
from nasq.latency.dataset import MeasureSettings, measure_parallel
from nasq.latency.fingerprint import device_fingerprint
from nasq.latency.predictor import LatencyPredictor
from nasq.qt_score import qt_details, subnet_latencies
from nasq.runfile import read_run_file
from nasq.spaces.spaceevo import space_from_name

TINY = space_from_name("spaceevo-tiny")
P, S, SAMPLES, SUBNETS = 8, 3, 12, 300
CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory) -> tuple[Path, LatencyPredictor]:
    """A real predictor of the tiny hyperspace: 7 body blocks, the stem and the heads measured here."""
    h = TINY.hyperspace
    body = [s for s in h.sample_block_specs(40, np.random.default_rng(0)) if s.type not in ("stem", "head")]
    specs = [h.stem(), *body[:7], *(h.head(w) for w in h.widths[-1])]
    rows = measure_parallel([[s] for s in specs], MeasureSettings(repeats=5, warmup=1), actors=0)
    pred = LatencyPredictor.fit(specs, [r["median_ms"] for r in rows], engine="ort-int8",
                                fingerprint=rows[0]["fingerprint"], meta={"space": "spaceevo-tiny:16"})
    path = tmp_path_factory.mktemp("pred") / "tiny.predictor.json"
    pred.save(path)
    return path, LatencyPredictor.load(path)


@pytest.fixture(scope="module")
def lut_dir(tmp_path_factory) -> Path:
    return write_tiny_lut(tmp_path_factory.mktemp("lut") / "tiny")


@pytest.fixture(scope="module")
def limits(predictor_file) -> list[float]:
    """Three limits inside the latency range of the homogeneous spaces' subnets (tight, middle, loose)."""
    _, pred = predictor_file
    from nasq.trainables.spaceevo import homogeneous_spaces

    lat = []
    for g in homogeneous_spaces(TINY):
        cand = TINY.candidate(g)
        lat.append(subnet_latencies(cand, cand.sample_subnets(200, np.random.default_rng(0)), pred))
    return [float(f"{np.percentile(np.concatenate(lat), q):.4g}") for q in (10, 40, 80)]


def _argv(lut_dir, pred_path, limits, storage, name, *extra) -> list[str]:
    return ["search", "spaceevo", "--lut", str(lut_dir), "--predictor", str(pred_path), "--constraints-ms",
            ",".join(f"{t:g}" for t in limits), "--hyperspace", "spaceevo-tiny", "--population", str(P),
            "--sample-size", str(S), "--samples", str(SAMPLES), "--qt-subnets", str(SUBNETS), "--seed", "0",
            "--storage", str(storage), "--name", name, *extra]


def proposal_order(run_dir: Path) -> list[str]:
    """Genomes in the order the searcher proposed them (Tune's trial tag counter)."""
    from nasq.run_checks import experiment_analysis

    trials = experiment_analysis(run_dir).trials
    return [t.config["genome"] for t in sorted(trials, key=lambda t: int(t.experiment_tag.split("_")[0]))]


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory, lut_dir, predictor_file, limits) -> Path:
    storage = tmp_path_factory.mktemp("runs")
    assert main(_argv(lut_dir, predictor_file[0], limits, storage, "tiny")) == 0
    return storage / "tiny"


pytestmark = pytest.mark.ray


def test_search_writes_the_spaceevo_report(run):
    trials = pd.read_csv(run / "trials.csv")
    done = trials.dropna(subset=["qt_score"])
    assert len(trials) == SAMPLES and len(done) == SAMPLES
    curve = pd.read_csv(run / "spaceevo_qt_curve.csv")
    assert len(curve) == SAMPLES and curve["best_so_far"].is_monotonic_increasing
    assert curve["best_so_far"].iloc[-1] == pytest.approx(done["qt_score"].max())
    best = json.loads((run / "spaceevo_best.json").read_text())
    assert best["genome"] == done.loc[done["qt_score"].idxmax(), "genome"]
    assert [s["block_type"] for s in best["stages"]] == list(TINY.decode(best["genome"]).types)
    hist = pd.read_csv(run / "spaceevo_population.csv")
    state = json.loads(sorted(run.glob("nasq-searcher-state-*.json"))[-1].read_text())["strategy"]
    living = [TINY.decode(m["genome"]).types for m in state["population"]]
    assert len(living) == P and (hist.groupby("stage")["count"].sum() == P).all()
    for _, r in hist.iterrows():
        assert r["count"] == sum(types[r["stage"]] == r["block_type"] for types in living)
    for png in ("spaceevo_qt_curve.png", "spaceevo_population.png"):
        assert (run / png).stat().st_size > 1000
    (run / "spaceevo_best.json").unlink()
    assert main(["report", str(run)]) == 0 and (run / "spaceevo_best.json").is_file()


def test_initial_population_starts_with_every_homogeneous_space(run):
    order = proposal_order(run)
    expected = [g for g in read_run_file(run).points_to_evaluate]
    assert len(expected) == len(TINY.hyperspace.types) == 7
    assert [set(TINY.decode(g).types) for g in expected] == [{t} for t in TINY.hyperspace.types]
    assert order[:7] == expected


def test_each_parent_gets_a_block_child_and_a_width_child(run):
    """After the initial population, proposals come in pairs from one parent: a ``block`` child (one stage's
    type changed, windows kept) then a ``width`` child (types kept, windows moved). So the parent is the
    genome with the second child's types and the first child's windows, and it was proposed before. With
    one child per parent (both kinds in one child) no pair has that shape."""
    order = [TINY.decode(g) for g in proposal_order(run)]
    children = order[P:]
    assert len(children) == SAMPLES - P and len(children) % 2 == 0
    for k in range(0, len(children), 2):
        block, width = children[k], children[k + 1]
        parent_types, parent_windows = width.types, block.windows
        assert sum(a != b for a, b in zip(block.types, parent_types)) == 1
        assert width.windows != parent_windows
        earlier = {(g.types, g.windows) for g in order[:P + k]}
        assert (parent_types, parent_windows) in earlier, f"pair {k // 2} has no common parent"


def test_every_score_is_the_plain_qt_score_under_all_limits(run, lut_dir, predictor_file):
    settings = read_run_file(run)
    limits = settings.options.constraints_ms
    lut, pred = AccuracyLUT.load(lut_dir), predictor_file[1]
    trials = pd.read_csv(run / "trials.csv").dropna(subset=["qt_score"])
    feasible_differ = False
    for _, r in trials.head(10).iterrows():
        res = qt_details(TINY.candidate(r["genome"]), limits, lut, pred, n_subnets=SUBNETS, seed=0)
        assert r["qt_score"] == pytest.approx(res.score, rel=1e-9)
        assert [r[f"qt_part_{i}"] for i in range(3)] == pytest.approx(list(res.per_limit), rel=1e-9)
        assert [r[f"feasible_subnets_{i}"] for i in range(3)] == list(res.feasible)
        assert r["subnets"] == res.subnets and 0 < r["lut_exact_frac"] < 1
        feasible_differ |= len(set(res.feasible)) == 3
    assert feasible_differ, "the limits do not separate the subnets; the test could not see an ignored limit"


@pytest.mark.parametrize("change, needle", [
    ({"--constraints-ms": "0,5"}, "--constraints-ms"),
    ({"--constraints-ms": "5,abc"}, "--constraints-ms"),
    ({"--constraints-ms": "5,5"}, "distinct"),
    ({"--lut": "/nonexistent/lut"}, "is not a folder"),
    ({"--hyperspace": "spaceevo-huge"}, "--hyperspace"),
    ({"--hyperspace": "spaceevo"}, "pass --hyperspace spaceevo-tiny:16"),
    ({"--predictor": "FOREIGN"}, "another device"),
    ({"--predictor": "OTHER-HYPERSPACE"}, "was built for hyperspace spaceevo:32"),
    ({"--predictor": "BLOCK-SPACE"}, "not for a hyperspace; build one with `nasq latency build --hyperspace"),
    ({"--predictor": "/nonexistent/p.json"}, "no such file"),
])
def test_bad_inputs_are_one_line_before_ray(tmp_path, capsys, lut_dir, predictor_file, limits, change,
                                            needle):
    argv = _argv(lut_dir, predictor_file[0], limits, tmp_path, "bad")
    if change.get("--predictor") in ("FOREIGN", "OTHER-HYPERSPACE", "BLOCK-SPACE"):
        pred = LatencyPredictor._from_doc(json.loads(predictor_file[0].read_text()))
        if change["--predictor"] == "FOREIGN":
            pred.fingerprint = {**device_fingerprint("ort-int8", 1), "cpu_model": "another-cpu"}
        elif change["--predictor"] == "BLOCK-SPACE":  # a hand-made block space need not cover the hyperspace
            pred.meta["space"] = "tiny"
        else:
            pred.meta["space"] = "spaceevo:32"
        pred._version = None
        change = {"--predictor": str(tmp_path / "other.json")}
        pred.save(change["--predictor"])
    for flag, value in change.items():
        argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_killed_search_resumes_to_the_end(tmp_path, lut_dir, predictor_file, limits):
    """SIGKILL the driver mid-search; `nasq resume DIR` finishes it with the same table and predictor."""
    env = {**os.environ, "NASQ_RAY_DASHBOARD": "0", "NASQ_RAY_NUM_CPUS": "2", "PYTHONUNBUFFERED": "1"}
    argv = _argv(lut_dir, predictor_file[0], limits, tmp_path, "killed")
    argv[argv.index("--samples") + 1] = "14"
    argv[argv.index("--qt-subnets") + 1] = "100"  # the scores are not checked here, only the resume
    run_dir, log = tmp_path / "killed", tmp_path / "search.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            done = run_dir / "completions.jsonl"
            if sorted(run_dir.glob("nasq-searcher-state-*.json")) and done.exists() and \
                    len(done.read_text().splitlines()) >= 5:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the search made no progress:\n" + log.read_text()[-3000:])
        time.sleep(2.5)  # let Tune write a snapshot with the progress
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run([sys.executable, "-c", CLI, "resume", str(run_dir)], env=env,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    trials = pd.read_csv(run_dir / "trials.csv")
    assert trials["qt_score"].notna().sum() >= 14 and (run_dir / "spaceevo_best.json").is_file()


def test_resume_refuses_a_changed_table(run, tmp_path):
    from nasq.errors import CheckpointError
    from nasq.trainables.spaceevo import prepare

    settings = read_run_file(run)
    changed = write_tiny_lut(tmp_path / "changed", share=0.3)
    with pytest.raises(CheckpointError, match="accuracy table .* has version .* the search started with"):
        prepare(settings.replace(options={"lut": str(changed)}), run, True)
    assert prepare(settings, run, True) == settings  # the run's own files pass
