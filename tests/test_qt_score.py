"""Q-T score (SpaceEvo §4.2) on hand-made tables whose answer is computed independently, by enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nasq.errors import ConfigError
from nasq.latency.predictor import LatencyPredictor
from nasq.qt_score import qt_details, qt_score
from nasq.spaces import get
from nasq.spaces.spaceevo import Hyperspace, SpaceEvoSpace
from nasq.spaces.spaceevo_subnet import BlockChoice, SubnetGenome, subnet_stage_keys

# 2 stages, one window each, depth 1-2, one kernel, one expand: 6 subnets per stage, 36 in all.
MICRO = Hyperspace(resolution=16, widths=((8, 16), (16, 24)), window=2, kernels=(3,), depths=(1, 2),
                   expands=(3.0,), types=("mbv2", "fused_mb"), stem_width=8)


def micro(types: tuple[str, str]):
    return SpaceEvoSpace(MICRO).candidate(f"{types[0]}:8-16|{types[1]}:16-24")


def all_subnets(cand) -> list[SubnetGenome]:
    per_stage = []
    for st in cand.stages:
        opts = []
        for d in st.depths:
            opts += [tuple(BlockChoice(w, st.kernels[0], st.expands[0]) for w in ws)
                     for ws in itertools.product(st.widths, repeat=d)]
        per_stage.append(opts)
    return [SubnetGenome(tuple(c)) for c in itertools.product(*per_stage)]


@pytest.fixture
def tables():
    """A candidate space, every subnet, a latency dict per block key and a loss dict per stage setting."""
    cand = micro(("fused_mb", "mbv2"))
    subs = all_subnets(cand)
    assert len(subs) == 36
    rng = np.random.default_rng(11)
    lat = {s.key(): float(v) for s, v in zip(cand.distinct_blocks(), rng.uniform(0.1, 1.0, 10_000))}
    keys = sorted({(i, cand.stages[i].type, k) for s in subs
                   for i, k in enumerate(subnet_stage_keys(cand, s))})
    lut = {k: float(v) for k, v in zip(keys, rng.uniform(0.05, 0.5, len(keys)))}
    return cand, subs, lat, lut


def oracle(cand, subs, lat, lut):
    """Per subnet (latency, loss) straight from its BlockSpec chain and its stage keys."""
    out = []
    for s in subs:
        ms = sum(lat[b.key()] for b in s.blocks(cand))
        loss = sum(lut[(i, cand.stages[i].type, k)] for i, k in enumerate(subnet_stage_keys(cand, s)))
        out.append((ms, loss))
    return np.array(out)


def test_top_k_average_matches_enumeration(tables):
    cand, subs, lat, lut = tables
    truth = oracle(cand, subs, lat, lut)
    ms, loss = truth[:, 0], truth[:, 1]
    limits = [float(np.percentile(ms, 30)), float(np.percentile(ms, 70)), float(ms.min()) - 1e-3]
    res = qt_details(cand, limits, lut, lat, n_subnets=5000, top_k=3, seed=0, penalty=-0.5)
    assert res.subnets == 36  # 5000 draws cover the 36 subnets
    expect = []
    for t in limits[:2]:
        feasible = np.sort(loss[ms <= t])
        assert len(feasible) > 3
        expect.append(float(np.mean(1.0 / feasible[:3])))
    assert res.feasible == (int((ms <= limits[0]).sum()), int((ms <= limits[1]).sum()), 0)
    assert res.per_limit == pytest.approx(expect + [-0.5])
    assert res.score == pytest.approx(sum(expect) - 0.5)
    assert qt_score(cand, limits, lut, lat, top_k=3, penalty=-0.5) == pytest.approx(res.score)


def test_code_variant_matches_enumeration(tables):
    cand, subs, lat, lut = tables
    truth = oracle(cand, subs, lat, lut)
    ms, loss = truth[:, 0], truth[:, 1]
    limits = [float(np.percentile(ms, 50)), float(ms.min()) - 1e-3]
    res = qt_details(cand, limits, lut, lat, top_k=4, variant="code")
    ok = ms <= limits[0]
    p = ok.mean() + 1e-5
    first = 1.0 / (max(1.0, (0.1 / p) ** 0.01) * np.sort(loss[ok])[:4].mean())
    empty = 1.0 / (max(1.0, (0.1 / 1e-5) ** 0.01) * 1e5)
    assert res.per_limit == pytest.approx([first, empty])
    assert np.isfinite(res.score) and res.per_limit[1] > 0


def test_type_with_lower_loss_and_latency_wins():
    def latency(specs):  # fused blocks cost half of mbv2 blocks of the same shape
        return np.array([(0.5 if s.type == "fused_mb" else 1.0) * 1e-3 * s.cin * s.cout + 0.01
                         for s in specs])

    def lut(stage, block_type, rows):  # fused stages distil better
        base = 0.1 if block_type == "fused_mb" else 0.2
        return base + 0.01 * rows[:, 1] - 1e-4 * rows[:, 2]

    scores = {t: qt_score(micro(t), [0.9, 1.2, 2.0], lut, latency) for t in
              [("fused_mb", "fused_mb"), ("fused_mb", "mbv2"), ("mbv2", "mbv2")]}
    assert scores[("fused_mb", "fused_mb")] > scores[("fused_mb", "mbv2")] > scores[("mbv2", "mbv2")]


def test_a_limit_nobody_meets_gives_the_penalty_not_nan(tables):
    cand, _, lat, lut = tables
    for penalty in (0.0, -2.0):
        res = qt_details(cand, [1e-6, 2e-6], lut, lat, penalty=penalty)
        assert res.per_limit == (penalty, penalty) and res.feasible == (0, 0)
    assert np.isfinite(qt_score(cand, [1e-6], lut, lat, variant="code"))
    # meeting a limit never scores below missing it with the default penalty
    assert qt_score(cand, [1e3], lut, lat) > qt_score(cand, [1e-6], lut, lat) == 0.0


def test_deterministic_per_seed_on_the_full_space():
    sp = get("spaceevo")
    cand = sp.candidate(sp.random(np.random.default_rng(0)))

    def latency(specs):
        return np.array([1e-7 * s.cin * s.cout * s.kernel * s.resolution ** 2 / s.stride ** 2
                         for s in specs])

    def lut(stage, block_type, rows):
        return 0.3 - 0.001 * rows[:, 1] - 1e-5 * rows[:, 2:6].sum(axis=1) + 0.01 * stage

    limits = [float(np.percentile(latency(cand.distinct_blocks()), 50) * k) for k in (10, 20, 40, 80, 160)]
    a = qt_details(cand, limits, lut, latency, seed=3)
    assert a == qt_details(cand, limits, lut, latency, seed=3)
    assert a.score != qt_details(cand, limits, lut, latency, seed=4).score
    assert a.subnets == 5000 and all(np.isfinite(a.per_limit))


def test_each_distinct_block_and_stage_setting_is_priced_once(tables):
    cand, _, lat, _ = tables
    calls = {"lat": [], "lut": []}

    def latency(specs):
        calls["lat"].append(len(specs))
        return np.array([lat[s.key()] for s in specs])

    def table(stage, block_type, rows):
        calls["lut"].append((stage, len(rows)))
        return np.full(len(rows), 0.2)

    qt_score(cand, [5.0], table, latency)
    assert calls["lat"] == [len(cand.distinct_blocks())]
    assert calls["lut"] == [(0, 6), (1, 6 * 2)]  # stage 1 settings also depend on the input width (2)


def test_latency_predictor_is_a_latency_source(tables):
    cand, _, lat, lut = tables
    specs = cand.distinct_blocks()  # a predictor fitted on exactly these blocks answers from its table
    ms = [lat[s.key()] for s in specs]
    pred = LatencyPredictor.fit(specs, ms, engine="test", fingerprint={}, correction=False)
    assert qt_score(cand, [2.0, 3.0], lut, pred) == pytest.approx(qt_score(cand, [2.0, 3.0], lut, lat))


def test_chain_overhead_of_a_source_is_used_when_offered(tables):
    cand, subs, lat, lut = tables

    class WithOverhead:  # 0.05 ms after every block a chain continues past (all but the head)
        def predict(self, specs):
            return np.array([lat[s.key()] for s in specs])

        def predict_in_chain(self, specs):
            return self.predict(specs) + np.array([0.0 if s.type == "head" else 0.05 for s in specs])

    truth = oracle(cand, subs, lat, lut)
    chain_ms = truth[:, 0] + 0.05 * np.array([len(s.blocks(cand)) - 1 for s in subs])
    limit = float(np.median(chain_ms))
    res = qt_details(cand, [limit], lut, WithOverhead())
    assert res.feasible == (int((chain_ms <= limit).sum()),)
    assert res.feasible != (int((truth[:, 0] <= limit).sum()),)


def test_bad_inputs_name_the_fix(tables):
    cand, _, lat, lut = tables
    with pytest.raises(ConfigError, match="'median'.*\\['paper', 'code'\\]"):
        qt_score(cand, [1.0], lut, lat, variant="median")
    with pytest.raises(ConfigError, match="positive finite"):
        qt_score(cand, [1.0, float("nan")], lut, lat)
    with pytest.raises(ConfigError, match="positive finite"):
        qt_score(cand, [], lut, lat)
    with pytest.raises(ConfigError, match="top_k"):
        qt_score(cand, [1.0], lut, lat, top_k=0)
    missing = dict(list(lat.items())[1:])
    with pytest.raises(ConfigError, match=f"no entry for block '{next(iter(lat))}'"):
        qt_score(cand, [1.0], lut, missing)
    with pytest.raises(ConfigError, match="accuracy table has no entry"):
        qt_score(cand, [1.0], dict(list(lut.items())[1:]), lat)
    with pytest.raises(ConfigError, match="non-finite"):
        qt_score(cand, [1.0], lambda i, t, rows: np.full(len(rows), np.nan), lat)
