"""`nasq search subnet` (SpaceEvo §5): the subnet space, the settings' checks before Ray, and a real
latency-constrained search of a small trained supernet through Ray Tune (no subnet over the limit)."""

from __future__ import annotations

import glob
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from test_spaceevo_search import predictor_file as tiny_predictor  # noqa: F401 (a fixture)

from nasq.cli.main import main
from nasq.latency.predictor import LatencyPredictor
from nasq.settings import SubnetSearchSettings, SupernetSettings
from nasq.spaces import get
from nasq.spaces.subnet import SubnetSpace
from nasq.supernet import Supernet
from nasq.supernet.launch import CHECKPOINT_FILE, batches, checkpoint_state, load_images, make_optimizer
from nasq.supernet.run import write_run_file
from nasq.supernet.train import SupernetTrainSettings, enable_qat, train_epoch

torch.set_num_threads(1)
SPACE = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck:32-40"
TINY = SubnetSpace("spaceevo-tiny", SPACE)


def test_mutations_change_one_block_or_one_depth():
    rng = np.random.default_rng(0)
    for _ in range(40):
        g = TINY.random(rng)
        TINY.candidate.validate(g)
        child = TINY.mutate(g, rng, "block")
        assert child.depths == g.depths
        diff = [(i, j) for i, (a, b) in enumerate(zip(g.stages, child.stages)) for j in range(len(a)) if a[j] != b[j]]
        assert len(diff) == 1
        deeper = TINY.mutate(g, rng, "depth")
        changed = [i for i, (a, b) in enumerate(zip(g.depths, deeper.depths)) if a != b]
        assert len(changed) == 1
        i = changed[0]
        keep = min(g.depths[i], deeper.depths[i])
        assert deeper.stages[i][:keep] == g.stages[i][:keep]  # the stage keeps its first blocks
        assert all(deeper.stages[k] == g.stages[k] for k in range(len(g.stages)) if k != i)
    assert TINY.mutation_kinds == ("block", "depth")


def test_space_is_registered_pickles_and_decodes_strictly():
    space = get("spaceevo-subnet", hyperspace="spaceevo-tiny", space=SPACE)
    back = pickle.loads(pickle.dumps(space))
    text = space.random_str(np.random.default_rng(1))
    assert back.canonical(text) == text and back.space_string == SPACE
    from nasq.errors import GenomeError

    with pytest.raises(GenomeError, match="width of stage 0"):
        space.decode(text.replace("c16", "c99", 1).replace("c24", "c99", 1))


@pytest.fixture(scope="module")
def predictor_file(tiny_predictor) -> Path:
    """A real INT8 predictor of the tiny hyperspace (a few of its blocks measured here, then fitted)."""
    return tiny_predictor[0]


def _supernet_run(run_dir: Path, qat: bool) -> Path:
    """A supernet run directory as `nasq supernet train` leaves it, trained here in a few plain steps."""
    s = SupernetSettings(space=SPACE, hyperspace="spaceevo-tiny", data_limit=300, batch_size=16, bn_batches=1,
                         n_random=1, epochs=1, qat_epochs=int(qat))
    write_run_file(run_dir, s)
    torch.manual_seed(0)
    net = Supernet.from_string(SPACE, "spaceevo-tiny")
    (x, y), _, _ = load_images(s, net.space.hyperspace.resolution)
    loader = batches(x, y, 16)[:8]
    opt, sched = make_optimizer(net, 0.05, 16)
    train_epoch(net, loader, opt, SupernetTrainSettings(n_random=1), 0, sched)
    if qat:
        enable_qat(net, x[:16])
        train_epoch(net, loader, opt, SupernetTrainSettings(n_random=1), 8, sched)
    (run_dir / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    torch.save(checkpoint_state(net, opt, sched, "qat" if qat else "fp32", int(qat), 16),
               run_dir / "checkpoint_2026-01-01_00-00-00.000000" / CHECKPOINT_FILE)
    return run_dir


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory) -> Path:
    return _supernet_run(tmp_path_factory.mktemp("sn") / "run", qat=True)


def _latency(pred: LatencyPredictor, genome: str) -> float:
    return pred.predict_model(TINY.candidate.blocks(TINY.decode(genome)))


def _limit(predictor_file: Path) -> float:
    """A limit that 30-50 % of random subnets exceed (the constraint must bite)."""
    pred = LatencyPredictor.load(predictor_file)
    rng = np.random.default_rng(3)
    lat = [_latency(pred, TINY.random_str(rng)) for _ in range(200)]
    return float(np.quantile(lat, 0.6))


def test_impossible_limit_and_untrained_supernet_fail_in_one_line(tmp_path, predictor_file, supernet_dir,
                                                                   capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started for a bad input"))
    base = ["search", "subnet", str(supernet_dir), "--predictor", str(predictor_file), "--storage", str(tmp_path)]
    fp32 = _supernet_run(tmp_path / "fp32", qat=False)
    for argv, match in (([*base, "--constraints-ms", "0.001"], "no subnet meets 0.001 ms"),
                        ([*base, "--constraints-ms", "-1"], "positive"),
                        ([*base[:3], "--constraints-ms", "1"], "--predictor FILE is required"),
                        (["search", "subnet", str(fp32), "--predictor", str(predictor_file), "--constraints-ms",
                          "5"], "no LSQ+ epoch"),
                        (["search", "subnet", str(tmp_path / "none"), "--predictor", str(predictor_file),
                          "--constraints-ms", "5"], "nasq-supernet.json")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("nasq: error:") and "\n" not in err and match in err, err
    other = SubnetSearchSettings(supernet=str(supernet_dir), predictor=str(predictor_file), max_latency_ms=9)
    assert other.check().space == SPACE and other.check().checkpoint.endswith("00.000000")


@pytest.mark.slow
@pytest.mark.ray
def test_constrained_search_never_proposes_a_subnet_over_the_limit(ray_session, tmp_path, predictor_file,
                                                                    supernet_dir, capsys):
    limit = _limit(predictor_file)
    argv = ["search", "subnet", str(supernet_dir), "--predictor", str(predictor_file), "--constraints-ms",
            f"{limit:.6f}", "--samples", "10", "--population", "5", "--sample-size", "2", "--seed", "0",
            "--storage", str(tmp_path), "--name", "s"]
    assert main(argv) == 0
    run_dir = next((tmp_path / "s").glob("limit-*ms"))
    pred = LatencyPredictor.load(predictor_file)
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 10 and trials["val_acc_int8"].between(0, 1).all()
    state = json.loads(Path(sorted(glob.glob(str(run_dir / "nasq-searcher-state-*.json")))[-1]).read_text())
    seen = state["strategy"]["seen"]
    assert len(seen) >= 10
    assert all(_latency(pred, g) <= limit for g in seen)  # recomputed here from the predictor file
    np.testing.assert_allclose(trials["latency_ms"], [_latency(pred, g) for g in trials["genome"]], rtol=1e-9)
    assert state["strategy"]["counters"]["infeasible_redrawn"] > 0  # the limit did reject draws
    best = json.loads((run_dir / "subnet_best.json").read_text())
    assert best["genome"] == trials.loc[trials["val_acc_int8"].idxmax(), "genome"]
    assert 0 <= best["test_acc_int8"] <= 1 and best["latency_ms"] <= limit
    assert (run_dir / "pareto.csv").is_file() and (run_dir / "supernet.pt").is_file()
    summary = pd.read_csv(tmp_path / "s" / "subnets.csv")
    assert summary["genome"].tolist() == [best["genome"]]
    assert "INT8 val" in capsys.readouterr().out
