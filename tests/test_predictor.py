"""Latency predictor: exact-key table, regressor fallback, save/load, fingerprints, op features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from nasq.blocks.cost import spec_features
from nasq.blocks.spec import BlockSpec
from nasq.errors import CheckpointError, GenomeError
from nasq.latency.cost_models import AdditiveCostModel, TreeEnsemble
from nasq.latency.dataset import (MeasureSettings, measure_parallel, read_dataset, sample_blocks,
                                  sample_chains, write_dataset)
from nasq.latency.features import OP_COLUMNS, conv_layers, op_features, op_matrix
from nasq.latency.fingerprint import device_fingerprint
from nasq.latency.predictor import LatencyPredictor

FP = {"cpu_model": "test-cpu", "cpu_flags": ["avx2"], "machine": "x86_64", "engine": "ort-int8",
      "engine_version": "onnxruntime 0.0", "threads": 1, "activation_type": "uint8", "weight_type": "int8"}
#: Per-unit costs (ms) of a synthetic device: latency is exactly additive over these op columns.
TRUE_COST = {"block": 0.004, "conv_macs": 0.002, "dw_macs": 0.02, "pw_macs": 0.0025, "hswish_elems": 0.3,
             "se_elems": 0.15, "add_elems": 0.05, "pool_elems": 0.01, "linear_macs": 0.03}


def synthetic_latency(specs: list[BlockSpec]) -> np.ndarray:
    x = op_matrix(specs)
    return sum(x[:, OP_COLUMNS.index(c)] * v for c, v in TRUE_COST.items())


@pytest.fixture(scope="module")
def synthetic() -> tuple[LatencyPredictor, list[BlockSpec], list[BlockSpec]]:
    """A predictor fitted on 200 synthetic blocks, plus 60 unseen blocks of the same space."""
    specs = sample_blocks("spaceevo-blocks", 260, seed=3, include_ends=False)
    train, test = specs[:200], specs[200:]
    pred = LatencyPredictor.fit(train, synthetic_latency(train), engine="ort-int8", fingerprint=FP,
                                correction=False)
    return pred, train, test


@pytest.fixture(scope="module")
def tiny_measured(tmp_path_factory) -> tuple[LatencyPredictor, list[dict]]:
    """A predictor trained on a tiny real data set measured here (tiny space, few repeats)."""
    blocks = sample_blocks("tiny", 16, seed=0)  # + 6 stems/heads: enough for the correction trees
    rows = measure_parallel([[b] for b in blocks], MeasureSettings(repeats=8, warmup=2), actors=0)
    path = write_dataset(tmp_path_factory.mktemp("ds") / "tiny.blocks.csv", rows, rows[0]["fingerprint"])
    rows, fp, _ = read_dataset(path)
    pred = LatencyPredictor.fit([r["key"] for r in rows], [r["median_ms"] for r in rows], engine="ort-int8",
                                fingerprint=fp)
    return pred, rows


def test_table_answers_measured_blocks_exactly(tiny_measured):
    pred, rows = tiny_measured
    got = pred.predict([r["key"] for r in rows])
    assert got.tolist() == [r["median_ms"] for r in rows]  # exact, not approximately
    assert pred.fingerprint == device_fingerprint("ort-int8", 1)


def test_miss_falls_back_to_finite_positive_regressor(tiny_measured):
    pred, rows = tiny_measured
    seen = {r["key"] for r in rows}
    unseen = [s for s in sample_blocks("tiny", 40, seed=99, include_ends=False) if s.key() not in seen][:8]
    odd = [BlockSpec("mbv3", 224, 512, 640, 7, 2, 16.0), BlockSpec("stem", 7, 3, 8, 1, 1)]
    got = pred.predict(unseen + odd)
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    np.testing.assert_allclose(got[:len(unseen)], pred.predict_regressor(unseen), rtol=1e-9, atol=0)


def test_additive_model_recovers_a_synthetic_device(synthetic):
    pred, _, test = synthetic
    truth = synthetic_latency(test)
    assert all(s.key() not in pred.table for s in test)
    np.testing.assert_allclose(pred.predict(test), truth, rtol=1e-5)


def test_type_never_seen_uses_pooled_model():
    # mbv2's operations (1x1, depthwise, add) all occur in other types, so the pooled model knows their costs
    specs = [s for s in sample_blocks("spaceevo-blocks", 200, seed=4, include_ends=False) if s.type != "mbv2"]
    pred = LatencyPredictor.fit(specs, synthetic_latency(specs), engine="ort-int8", fingerprint=FP,
                                correction=False)
    mbv2 = [BlockSpec("mbv2", 28, 32, 48, 5, 1, 4.0), BlockSpec("mbv2", 14, 96, 96, 3, 1, 6.0)]
    assert "mbv2" not in pred.type_models and "mbv1" in pred.type_models
    np.testing.assert_allclose(pred.predict(mbv2), synthetic_latency(mbv2), rtol=1e-5)


def test_prediction_of_a_block_does_not_depend_on_its_batch():
    # dense costs on every column and the tree correction: a BLAS product over the batch (x @ coef) blocks
    # rows by SIMD width, so a row's sum order (and last bit) would change with the batch around it
    specs = sample_blocks("spaceevo-blocks", 400, seed=11)
    x = op_matrix(specs)
    rng = np.random.default_rng(1)
    y = (0.004 + x @ rng.random(x.shape[1]) * 0.01) * np.exp(rng.normal(0, 0.1, len(specs)))
    pred = LatencyPredictor.fit(specs, y, engine="ort-int8", fingerprint=FP)
    assert pred.correction is not None and pred.type_models
    keys = [s.key() for s in sample_blocks("spaceevo-blocks", 300, seed=12)]
    whole = pred.predict(keys)
    assert sum(k not in pred.table for k in keys) > 200  # mostly regressor answers
    for batch in (1, 3, 7, 50):
        parts = np.concatenate([pred.predict(keys[i:i + batch]) for i in range(0, len(keys), batch)])
        assert np.array_equal(parts, whole), f"batch {batch}: {int((parts != whole).sum())} values differ"
    reversed_keys = keys[::-1]
    assert np.array_equal(pred.predict(reversed_keys)[::-1], whole)


def test_bad_key_is_a_genome_error_not_a_miss(synthetic):
    with pytest.raises(GenomeError, match="mbv9"):
        synthetic[0].predict(["mbv9-r28-i32-o32-k3-s1-e1"])


def test_predict_model_is_sum_plus_calibrated_overhead(synthetic):
    pred, _, _ = synthetic
    chains = sample_chains("spaceevo-blocks", 12, seed=5)
    per_boundary = -0.0025
    measured = [pred.predict(c).sum() + per_boundary * (len(c) - 1) for c in chains]
    pred.calibrate(chains, measured)
    assert pred.overhead["per_boundary_ms"] == pytest.approx(per_boundary, rel=1e-6)
    assert [pred.predict_model(c) for c in chains] == pytest.approx(measured, rel=1e-9)


def test_save_load_round_trip_gives_identical_predictions(tiny_measured, tmp_path):
    pred, rows = tiny_measured
    pred.calibrate(sample_chains("tiny", 4, seed=1), [0.05, 0.06, 0.07, 0.08])
    path = tmp_path / "p.json"
    version = pred.save(path)
    back = LatencyPredictor.load(path)
    unseen = sample_blocks("tiny", 30, seed=7, include_ends=False)
    specs = [r["key"] for r in rows] + [s.key() for s in unseen]
    assert np.array_equal(back.predict(specs), pred.predict(specs))
    chain = sample_chains("tiny", 1, seed=8)[0]
    assert back.predict_model(chain) == pred.predict_model(chain)
    assert back.version == version == pred.version
    assert pred.correction is not None and back.correction is not None
    assert "pickle" not in path.read_text() and json.loads(path.read_text())["version"] == version


def test_foreign_fingerprint_is_refused_with_a_clear_message(synthetic, tmp_path):
    pred, _, test = synthetic
    path = tmp_path / "foreign.json"
    pred.save(path)  # measured on "test-cpu", not on this machine
    with pytest.raises(CheckpointError) as err:
        LatencyPredictor.load(path)
    msg = str(err.value)
    assert "cpu_model" in msg and "test-cpu" in msg and "\n" not in msg
    assert "--allow-foreign" in msg and "allow_foreign=True" in msg  # the CLI flag and the API argument
    assert np.array_equal(LatencyPredictor.load(path, allow_foreign=True).predict(test), pred.predict(test))


def test_other_thread_count_is_refused(tmp_path):
    here = device_fingerprint("ort-int8", 1)
    specs = sample_blocks("tiny", 12, seed=2)
    pred = LatencyPredictor.fit(specs, synthetic_latency(specs), engine="ort-int8", fingerprint=here)
    pred.save(tmp_path / "p.json")
    LatencyPredictor.load(tmp_path / "p.json")
    with pytest.raises(CheckpointError, match="threads"):
        LatencyPredictor.load(tmp_path / "p.json", threads=2)


@pytest.mark.parametrize("damage", ["truncate", "not-json", "wrong-format", "edited-coef", "missing"])
def test_corrupt_file_is_a_checkpoint_error(synthetic, tmp_path, damage):
    path = tmp_path / "p.json"
    synthetic[0].save(path)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "not-json":
        path.write_bytes(b"\x80\x04\x95 pickle bytes")
    elif damage == "wrong-format":
        path.write_text(json.dumps({**json.loads(text), "format": "something-else"}))
    elif damage == "edited-coef":
        doc = json.loads(text)
        doc["pooled_model"]["coef"][0] += 1.0
        path.write_text(json.dumps(doc))
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match="latency build"):
        LatencyPredictor.load(path, allow_foreign=True)


def test_exported_trees_reproduce_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = np.sin(x[:, 0]) + x[:, 1] ** 2
    ens = TreeEnsemble.fit(x, y, n_estimators=50, max_depth=3, seed=1)
    gb = GradientBoostingRegressor(init="zero", n_estimators=50, max_depth=3, learning_rate=0.05,
                                   min_samples_leaf=5, subsample=0.8, random_state=1).fit(x, y - y.mean())
    xt = rng.normal(size=(100, 6))
    np.testing.assert_allclose(ens.predict(xt), gb.predict(xt) + y.mean(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(TreeEnsemble.from_dict(json.loads(json.dumps(ens.to_dict()))).predict(xt),
                                  ens.predict(xt))


def test_additive_model_is_non_negative_and_relative():
    x = np.abs(np.random.default_rng(1).normal(size=(40, 3)))
    model = AdditiveCostModel.fit(x, x @ np.array([2.0, 0.0, 0.5]) + 1e-9, ["a", "b", "c"])
    assert np.all(model.coef >= 0)
    np.testing.assert_allclose(model.coef, [2.0, 0.0, 0.5], atol=1e-6)


@pytest.mark.parametrize("key", ["mbv1-r56-i24-o16-k5-s1-e1", "mbv2-r28-i32-o48-k3-s2-e6",
                                 "mbv3-r14-i64-o64-k5-s1-e4", "fused_mb_se-r28-i32-o32-k3-s1-e3",
                                 "resnet_bottleneck_se-r14-i48-o96-k3-s2-e0.5", "stem-r112-i3-o16-k3-s2-e1",
                                 "head-r7-i128-o1000-k1-s1-e1"])
def test_op_features_match_the_block_cost_model(key):
    spec = BlockSpec.from_key(key)
    ops, ref = op_features(spec), spec_features(spec)
    assert ops["conv_macs"] * 1e6 == pytest.approx(ref["macs_convkxk"])
    assert ops["dw_macs"] * 1e6 == pytest.approx(ref["macs_dwconv"])
    assert (ops["pw_macs"] * 1e6 == pytest.approx(ref["macs_conv1x1"]))
    assert (ops["se_macs"] + ops["linear_macs"]) * 1e6 == pytest.approx(ref["macs_fc"])
    assert ops["hswish_elems"] * 1e6 == pytest.approx(ref["elems_hswish"])
    by_kind = {"conv": 0.0, "dw": 0.0, "pw": 0.0}
    for kind, cin, cout, k, px in conv_layers(spec):
        by_kind[kind] += px * cout * (1 if kind == "dw" else cin) * k * k
    assert by_kind["conv"] == pytest.approx(ref["macs_convkxk"]) and by_kind["pw"] == pytest.approx(
        ref["macs_conv1x1"]) and by_kind["dw"] == pytest.approx(ref["macs_dwconv"])


def test_sampled_chains_fit_and_blocks_are_distinct():
    from nasq.blocks.spec import check_chain

    chains = sample_chains("spaceevo-blocks", 20, seed=2)
    for c in chains:
        check_chain(c)
        assert c[0].type == "stem" and c[-1].type == "head" and 4 <= len(c) - 2 <= 10
    blocks = sample_blocks("spaceevo-blocks", 50, seed=2)
    assert len({b.key() for b in blocks}) == len(blocks) == 50 + 4 + 18  # + every stem and head


def test_dataset_file_without_header_is_a_data_error(tmp_path):
    from nasq.errors import DataError

    (tmp_path / "x.csv").write_text("key,median_ms\nmbv1-r7-i16-o16-k3-s1-e1,0.1\n")
    with pytest.raises(DataError, match="latency build"):
        read_dataset(tmp_path / "x.csv")


def test_noisy_measurements_are_repeated_and_the_steadiest_kept(monkeypatch):
    import nasq.latency.dataset as ds

    calls = []

    def fake_measure(items, settings, actors=2, pin=True):  # spreads: 50 % first, then 1 %
        calls.append(len(items))
        iqr = 0.5 if len(calls) == 1 else 0.01
        return [{"key": "+".join(s.key() for s in it), "median_ms": 1.0 + len(calls), "p25_ms": 1.0,
                 "p75_ms": 1.0 + iqr * (1.0 + len(calls))} for it in items]

    monkeypatch.setattr(ds, "measure_parallel", fake_measure)
    blocks = sample_blocks("tiny", 3, seed=0, include_ends=False)
    rows = ds.measure_robust([[b] for b in blocks], MeasureSettings(), actors=0, max_iqr=0.1, retries=2)
    assert calls == [3, 3]  # all three re-measured once, then steady
    assert [r["median_ms"] for r in rows] == [3.0] * 3 and all(r["attempts"] == 2 for r in rows)


def test_in_process_measurement_leaves_torch_threads_as_they_were():
    import torch

    from nasq.blocks.spec import BlockSpec
    from nasq.latency.dataset import MeasureSettings, measure_parallel

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        spec = BlockSpec.from_key("mbv1-r7-i16-o16-k3-s1-e1")
        rows = measure_parallel([[spec]], MeasureSettings(engine="ort-fp32", repeats=3, warmup=1), actors=0)
        assert rows[0]["median_ms"] > 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
