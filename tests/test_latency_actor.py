"""Latency predictor served by named Ray actors: batching, restart from file, find by name, pool; the
pinned measuring ActorPool."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from nasq.blocks.spec import BlockSpec
from nasq.errors import ConfigError
from nasq.latency.actors import LatencyPredictorPool, actor_name, get_predictor, start_predictor
from nasq.latency.cost_models import AdditiveCostModel
from nasq.latency.dataset import MeasureSettings, measure_parallel, sample_blocks
from nasq.latency.features import OP_COLUMNS, op_matrix
from nasq.latency.fingerprint import device_fingerprint
from nasq.latency.predictor import LatencyPredictor

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory):
    """A predictor for this machine's fingerprint, fitted on synthetic latencies (no timing needed)."""
    specs = sample_blocks("spaceevo-blocks", 120, seed=11)
    x = op_matrix(specs)
    y = 0.004 + x[:, OP_COLUMNS.index("pw_macs")] * 0.002 + x[:, OP_COLUMNS.index("dw_macs")] * 0.02
    pred = LatencyPredictor.fit(specs, y, engine="ort-int8", fingerprint=device_fingerprint("ort-int8", 1))
    path = tmp_path_factory.mktemp("pred") / "ort-int8.json"
    pred.save(path)
    return path, pred


def _queries() -> list[str]:
    return [s.key() for s in sample_blocks("spaceevo-blocks", 60, seed=12)]


def test_actor_batch_matches_plain_class_and_carries_version(ray_session, predictor_file):
    path, pred = predictor_file
    actor = start_predictor(path)
    keys = _queries()
    answer = ray_session.get(actor.predict.remote(keys))
    assert answer["latency_ms"] == pred.predict(keys).tolist()
    assert answer["version"] == pred.version
    chains = [[keys[0]]]
    models = ray_session.get(actor.predict_models.remote(chains))
    assert models["latency_ms"] == [pred.predict_model(chains[0])]


def test_actor_is_found_by_name(ray_session, predictor_file):
    path, pred = predictor_file
    start_predictor(path)
    found = get_predictor("ort-int8")
    info = ray_session.get(found.info.remote())
    assert info["version"] == pred.version
    expected = f"nasq-latency-ort-int8-{pred.fingerprint['fingerprint_id'][:8]}"
    assert actor_name("ort-int8", pred.fingerprint) == expected
    with pytest.raises(ConfigError, match="start_predictor"):
        get_predictor("ort-fp32")


def test_killed_actor_restarts_and_reloads_the_file(ray_session, predictor_file):
    path, pred = predictor_file
    actor = start_predictor(path)
    keys = _queries()
    assert not ray_session.get(actor.info.remote())["restarted"]
    ray_session.kill(actor, no_restart=False)
    deadline, after = time.monotonic() + 60, {}
    while not after.get("restarted") and time.monotonic() < deadline:
        try:
            after = ray_session.get(actor.info.remote(), timeout=30)
        except (ray_session.exceptions.RayActorError, ray_session.exceptions.GetTimeoutError):
            time.sleep(0.5)
    assert after.get("restarted"), "the killed actor was not restarted by Ray"
    answer = ray_session.get(get_predictor("ort-int8").predict.remote(keys))
    assert answer["latency_ms"] == pred.predict(keys).tolist() and answer["version"] == pred.version


#: Batched and plain answers may differ by rounding only; a model off by 1e-6 in one cost must fail.
RTOL = 1e-9


def test_pool_of_replicas_matches_plain_class(ray_session, predictor_file):
    path, pred = predictor_file
    pool = LatencyPredictorPool(path, replicas=2)
    try:
        keys = _queries() * 3
        batched = pool.predict(keys, batch_size=50)
        np.testing.assert_allclose(batched, pred.predict(keys), rtol=RTOL, atol=0)
        assert pool.version == pred.version
        with pytest.raises(AssertionError):  # the tolerance still tells a slightly wrong model apart
            np.testing.assert_allclose(batched, _perturbed(pred, keys, 1e-6).predict(keys), rtol=RTOL, atol=0)
    finally:
        pool.shutdown()


def _perturbed(pred: LatencyPredictor, keys: list[str], rel: float) -> LatencyPredictor:
    """A copy of ``pred`` with one cost coefficient off by ``rel`` (relative): the one contributing most
    to the first query the table misses."""
    miss = [BlockSpec.from_key(k) for k in keys if k not in pred.table]
    models = {t: AdditiveCostModel(list(m.columns), m.coef.copy()) for t, m in pred.type_models.items()}
    pooled = AdditiveCostModel(list(pred.pooled_model.columns), pred.pooled_model.coef.copy())
    model = models.get(miss[0].type, pooled)
    x = op_matrix(miss[:1])[0, [OP_COLUMNS.index(c) for c in model.columns]]
    model.coef[np.argmax(x * model.coef)] *= 1 + rel
    return LatencyPredictor(pred.engine, pred.fingerprint, pred.table, models, pooled, pred.correction,
                            pred.overhead, pred.meta)


def test_measuring_actors_are_pinned_and_keep_order(ray_session):
    blocks = sample_blocks("tiny", 4, seed=5, include_ends=False)
    rows = measure_parallel([[b] for b in blocks], MeasureSettings(repeats=5, warmup=1), actors=2)
    assert [r["key"] for r in rows] == [b.key() for b in blocks]
    assert all(r["median_ms"] > 0 for r in rows)
    cpus = sorted(os.sched_getaffinity(0))
    assert {r["cpu"] for r in rows} == set(cpus[:2])  # actor i pinned to the i-th allowed CPU
