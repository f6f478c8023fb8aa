"""Latency for a SpaceEvo space (issue 8): the block space as a view of the hyperspace, deep subnet chains,
``predict_in_chain`` summed by the Q-T score, ``spaces.get("spaceevo:RES")`` and a real tiny build."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import nasq.cli.main as cli_main
from nasq import spaces
from nasq.blocks.spec import chain_key, check_chain
from nasq.errors import ConfigError
from nasq.latency.dataset import get_space, read_dataset, sample_blocks, sample_chains
from nasq.latency.evaluate import CALIB_SEED_OFFSET, unseen_chains
from nasq.latency.features import OP_COLUMNS, op_matrix
from nasq.latency.predictor import LatencyPredictor
from nasq.qt_score import qt_details, subnet_latencies
from nasq.spaces.spaceevo import SpaceGenome

TINY = "spaceevo-tiny:32"
FP = {"cpu_model": "test-cpu", "cpu_flags": ["avx2"], "machine": "x86_64", "engine": "ort-int8",
      "engine_version": "onnxruntime 0.0", "threads": 1, "activation_type": "uint8", "weight_type": "int8"}


def synthetic_ms(specs) -> np.ndarray:
    """A made-up device whose latency is additive over a few op columns (no measurement needed)."""
    x = op_matrix(specs)
    cost = {"block": 0.004, "conv_macs": 0.002, "dw_macs": 0.02, "pw_macs": 0.0025, "linear_macs": 0.03}
    return sum(x[:, OP_COLUMNS.index(c)] * v for c, v in cost.items()) + 0.01


def all_candidates(space):
    """Candidate spaces whose blocks together are every block any candidate can hold.

    A stage's blocks depend only on its own type and on its and the previous stage's windows, so the
    homogeneous spaces with every combination of windows reach every (type, window pair) of every stage.
    """
    h = space.hyperspace
    for t in h.types:
        for windows in itertools.product(*(range(h.num_windows(i)) for i in range(h.num_stages))):
            yield space.candidate(SpaceGenome((t,) * h.num_stages, windows))


# -- the BlockSpace is a view of the hyperspace --------------------------------------------------------
def test_view_holds_exactly_the_blocks_candidate_spaces_can_produce():
    view = get_space(TINY)
    space = spaces.get(TINY)
    assert view.hyperspace == space.hyperspace
    reachable = set().union(*(c.distinct_keys() for c in all_candidates(space)))
    assert {s.key() for s in view.block_specs()} == reachable  # nothing missing, nothing extra


def test_every_block_of_sampled_subnets_is_in_the_view_choice_sets():
    for name in (TINY, "spaceevo:224"):
        view, space = get_space(name), spaces.get(name)
        rng = np.random.default_rng(4)
        for _ in range(6):
            cand = space.candidate(space.random(rng))
            batch = cand.sample_subnets(20, rng)
            for row in range(len(batch)):
                for s in cand.blocks(cand.genome(batch, row)):
                    assert view.contains(s), s.key()
                    if s.type == "head":
                        assert s in view.heads()
                        continue
                    assert s.cout in view.widths[s.out_resolution], s.key()
                    if s.type == "stem":
                        assert s in view.stems()
                        continue
                    assert s.type in view.types and s.kernel in view.kernels, s.key()
                    allowed = (1.0,) if s.type == "mbv1" else (
                        view.resnet_expands if s.type.startswith("resnet") else view.expands)
                    assert s.expand in allowed, s.key()


def test_sampled_blocks_cover_every_type_resolution_and_stride():
    view = get_space("spaceevo:224")
    groups = {(s.type, s.resolution, s.stride) for s in view.block_specs() if s.type not in ("stem", "head")}
    blocks = sample_blocks(view, 2 * len(groups), seed=0)
    body = blocks[:-len(view.stems() + view.heads())]
    assert blocks[len(body):] == view.stems() + view.heads()
    assert len({s.key() for s in body}) == len(body) == 2 * len(groups)
    assert all(view.contains(s) for s in blocks)
    counts = {g: 0 for g in groups}
    for s in body:
        counts[(s.type, s.resolution, s.stride)] += 1
    assert set(counts.values()) == {2}  # round robin: each group twice, none left out
    draws = [[s.key() for s in sample_blocks(view, 30, seed=seed)] for seed in (5, 5, 6)]
    assert draws[0] == draws[1] != draws[2]  # one seeded generator decides the draw


def test_chains_are_subnets_as_deep_as_the_space():
    view = get_space("spaceevo")
    chains = sample_chains(view, 40, seed=1)
    lengths = [len(c) for c in chains]
    assert min(lengths) >= 2 + 6 and max(lengths) <= 2 + 6 * 4
    assert max(lengths) > 2 + 10  # deeper than the hand-made spaces' 4-10-block chains
    for c in chains:
        check_chain(c)
        assert c[0].type == "stem" and c[-1].type == "head" and all(view.contains(s) for s in c)
    assert len({chain_key(c) for c in chains}) == len(chains)


def test_evaluation_skips_the_calibration_subnets():
    view = get_space(TINY)
    pred = LatencyPredictor.fit(view.stems() + view.heads(), [0.01] * 4, engine="ort-int8", fingerprint=FP,
                                correction=False, meta={"space": TINY, "calib_chains": 6, "seed": 3})
    calib = {chain_key(c) for c in sample_chains(view, 6, seed=3 + CALIB_SEED_OFFSET)}
    same_seed = unseen_chains(pred, view, 6, seed=3 + CALIB_SEED_OFFSET)
    assert len(same_seed) == 6 and not calib & {chain_key(c) for c in same_seed}
    alias = get_space("spaceevo-tiny:16")  # the twin's default resolution, spelled two ways
    pred.meta["space"] = "spaceevo-tiny"
    calib = {chain_key(c) for c in sample_chains(alias, 6, seed=3 + CALIB_SEED_OFFSET)}
    assert not calib & {chain_key(c) for c in unseen_chains(pred, alias, 6, seed=3 + CALIB_SEED_OFFSET)}


def test_bad_block_space_names_list_the_hyperspaces():
    assert get_space("spaceevo:224").hyperspace.resolution == 224
    with pytest.raises(ConfigError, match=r"spaceevo\[:RES\]"):
        get_space("huge")
    with pytest.raises(ConfigError, match="spaceevo:RES"):
        get_space("spaceevo:big")
    with pytest.raises(ConfigError, match="not a hyperspace view"):
        get_space("tiny").block_specs()


# -- spaces.get parses :RES strictly --------------------------------------------------------------
def test_spaces_get_parses_the_resolution():
    assert spaces.get("spaceevo:224").hyperspace.strides == (2, 1, 2, 2, 1, 2, 2)
    assert spaces.get("spaceevo-tiny:32").hyperspace.resolution == 32
    assert spaces.get("spaceevo").hyperspace.resolution == 32


@pytest.mark.parametrize("name, fix", [("spaceevo:2²4", "spaceevo:RES"), ("spaceevo:032", "spaceevo:RES"),
                                       ("spaceevo:", "spaceevo:RES"), ("spaceevo:-32", "spaceevo:RES"),
                                       ("nb201:32", "spaceevo-tiny"), ("spaceevo:33", "multiple of 8")])
def test_spaces_get_refuses_a_bad_resolution_in_one_line(name, fix):
    with pytest.raises(ConfigError, match=fix) as info:
        spaces.get(name)
    assert "\n" not in str(info.value)


# -- predict_in_chain is what the Q-T score sums ---------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated() -> LatencyPredictor:
    """A predictor fitted on synthetic block latencies, calibrated with a known per-boundary overhead."""
    view = get_space(TINY)
    blocks = sample_blocks(view, 80, seed=0)
    pred = LatencyPredictor.fit(blocks, synthetic_ms(blocks), engine="ort-int8", fingerprint=FP)
    chains = sample_chains(view, 12, seed=1)
    measured = [pred.predict(c).sum() - 0.003 * (len(c) - 1)
                + 0.002 * sum(s.cout * s.out_resolution ** 2 for s in c[:-1]) / 1e6 for c in chains]
    pred.calibrate(chains, measured)
    assert pred.overhead["per_boundary_ms"] == pytest.approx(-0.003, rel=1e-6)
    return pred


def test_predict_in_chain_adds_the_boundary_to_every_block_but_the_head(calibrated):
    view = get_space(TINY)
    specs = view.stems() + sample_blocks(view, 5, seed=9, include_ends=False) + view.heads()
    plain, in_chain = calibrated.predict(specs), calibrated.predict_in_chain(specs)
    elems = np.array([s.cout * s.out_resolution ** 2 for s in specs]) / 1e6
    over = calibrated.overhead
    want = plain + over["per_boundary_ms"] + over["per_boundary_melem_ms"] * elems
    heads = np.array([s.type == "head" for s in specs])
    assert np.allclose(in_chain[~heads], want[~heads]) and np.array_equal(in_chain[heads], plain[heads])


def test_qt_score_subnet_latency_equals_predict_model(calibrated):
    space = spaces.get(TINY)
    rng = np.random.default_rng(2)
    for _ in range(3):
        cand = space.candidate(space.random(rng))
        batch = cand.sample_subnets(50, rng).unique()
        summed = subnet_latencies(cand, batch, calibrated)
        whole = [calibrated.predict_model(cand.blocks(cand.genome(batch, r))) for r in range(len(batch))]
        assert summed == pytest.approx(whole, rel=1e-9)
        plain = subnet_latencies(cand, batch, calibrated.predict)  # without the boundaries: differs
        assert not np.allclose(plain, whole, rtol=1e-3)


# -- a real tiny build through the CLI, then the Q-T score with it ------------------------------------------
def test_real_tiny_hyperspace_build_feeds_qt_score(tmp_path, capsys):
    out = tmp_path / "tiny.json"
    fast = ["--actors", "0", "--repeats", "3", "--warmup", "1"]
    code = cli_main.main(["latency", "build", "--hyperspace", TINY, "--samples", "3", "--calib-chains", "2",
                          "--out", str(out), *fast])
    assert code == 0, capsys.readouterr().err
    pred = LatencyPredictor.load(out)
    view = get_space(TINY)
    assert pred.meta["space"] == TINY and pred.overhead["chains"] == 2
    assert len(pred.table) == 3 + len(view.stems() + view.heads())
    assert all(view.contains(s) for s in map(type(view.stems()[0]).from_key, pred.table))
    # blocks and chains are measured in one shuffled pass; each row is filed back under its own item
    blocks_csv, _, _ = read_dataset(tmp_path / "tiny.blocks.csv")
    chains_csv, _, _ = read_dataset(tmp_path / "tiny.chains.csv")
    assert [r["key"] for r in blocks_csv] == [s.key() for s in sample_blocks(view, 3, seed=0)]
    assert [r["key"] for r in chains_csv] == [chain_key(c) for c in sample_chains(view, 2, seed=CALIB_SEED_OFFSET)]
    space = spaces.get(TINY)
    cand = space.candidate(space.random(np.random.default_rng(0)))
    lat = subnet_latencies(cand, cand.sample_subnets(200, np.random.default_rng(1)).unique(), pred)
    limits = [float(np.quantile(lat, 0.3)), float(np.quantile(lat, 0.9))]
    res = qt_details(cand, limits, lambda i, t, rows: 1.0 + rows[:, 1] * 0.1 + rows[:, 2] * 0.001, pred,
                     n_subnets=200, top_k=5)
    assert np.isfinite(res.score) and res.score > 0 and res.feasible[0] < res.feasible[1]
    capsys.readouterr()
    code = cli_main.main(["latency", "eval", "--predictor", str(out), "--models", "2", "--out",
                          str(tmp_path / "ev"), *fast])
    printed = capsys.readouterr().out
    assert code == 0 and "2 unseen subnets" in printed and "within ±5 %" in printed
    doc = json.loads((tmp_path / "ev" / "tiny.eval.json").read_text())
    assert doc["space"] == TINY and len(doc["models"]) == 2
    assert all(m["key"].startswith(view.stems()[0].key() + "+") for m in doc["models"])


def test_hyperspace_flag_refuses_a_hand_made_space(tmp_path, capsys):
    code = cli_main.main(["latency", "build", "--hyperspace", "tiny", "--out", str(tmp_path / "p.json"),
                          "--actors", "0"])
    assert code == 2 and "spaceevo-tiny[:RES]" in capsys.readouterr().err
