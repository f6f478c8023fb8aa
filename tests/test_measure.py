"""Real latency measurement on ONNX Runtime (FP32, INT8 QDQ) and TFLite, with device fingerprints."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from nasq.blocks.spec import BlockSpec
from nasq.errors import ConfigError
from nasq.latency import engines
from nasq.latency.fingerprint import device_fingerprint, fingerprint_id, fingerprint_mismatch
from nasq.latency.measure import (Measurement, measure_onnx, measure_specs, pinned, prepare_artifact,
                                  summarize)

SMALL = [BlockSpec("mbv2", 8, 16, 16, 3, 1, 4)]
CHAIN = [BlockSpec("stem", 16, 3, 16, 3, 2), BlockSpec("fused_mb_se", 8, 16, 16, 3, 1, 2),
         BlockSpec("head", 8, 16, 10, 1, 1)]


def _check(m: Measurement, engine: str) -> None:
    assert m.engine == engine
    assert math.isfinite(m.median_ms) and m.median_ms > 0
    assert m.p25_ms <= m.median_ms <= m.p75_ms
    assert m.fingerprint["engine"] == engine and m.fingerprint["threads"] == 1
    assert m.fingerprint["cpu_model"] and len(m.fingerprint["fingerprint_id"]) == 16
    assert len(m.load_avg) == 3 and all(x >= 0 for x in m.load_avg)


@pytest.mark.parametrize("engine", ["ort-fp32", "ort-int8"])
def test_ort_measurement_real(engine):
    m = measure_specs(SMALL, engine, repeats=7, warmup=2)
    _check(m, engine)
    assert m.key == SMALL[0].key() and m.repeats == 7
    want = "float32" if engine == "ort-fp32" else "uint8"
    assert m.fingerprint["activation_type"] == want
    assert Measurement.from_dict(m.to_dict()) == m


def test_chain_measured_whole_and_pinned():
    m = measure_specs(CHAIN, "ort-int8-s8s8", repeats=5, warmup=1)
    _check(m, "ort-int8")
    assert m.key.count("+") == 2 and m.fingerprint["activation_type"] == "int8"
    if hasattr(os, "sched_getaffinity"):
        assert len(m.cpus) == 1 and m.cpus[0] in os.sched_getaffinity(0)


def _zero_point_types(model: onnx.ModelProto) -> set[int]:
    inits = {i.name: i for i in model.graph.initializer}
    return {inits[n.input[2]].data_type for n in model.graph.node
            if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits}


@pytest.mark.parametrize("act, dtype", [("uint8", TensorProto.UINT8), ("int8", TensorProto.INT8)])
def test_int8_graph_is_qdq_with_int8_weights(tmp_path, act, dtype):
    path = prepare_artifact(SMALL, "ort-int8", tmp_path, activation_type=act)
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    inits = {i.name: i for i in model.graph.initializer}
    conv_weights = []
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "Conv":
            dq = producer[n.input[1]]
            assert dq.op_type == "DequantizeLinear"
            conv_weights.append(inits[dq.input[0]])
            assert inits[dq.input[1]].dims[0] == inits[dq.input[0]].dims[0]  # per-channel scales
    assert len(conv_weights) == 3 and all(w.data_type == TensorProto.INT8 for w in conv_weights)
    assert _zero_point_types(model) == {dtype}  # activations quantized with the requested type
    fp32 = onnx.load(str(tmp_path / "model_fp32.onnx"))
    assert "BatchNormalization" not in {n.op_type for n in fp32.graph.node}  # folded at export


def test_measure_onnx_quantizes_fp32_file(tmp_path):
    path = prepare_artifact(SMALL, "ort-fp32", tmp_path)
    m = measure_onnx(path, "ort-int8", repeats=5, warmup=1)
    _check(m, "ort-int8")
    assert m.key == "model_fp32.onnx"
    q = prepare_artifact(SMALL, "ort-int8-s8s8", tmp_path)  # already quantized: timed as is
    m = measure_onnx(q, "ort-int8", repeats=3, warmup=1)
    assert m.fingerprint["activation_type"] == "int8"
    with pytest.raises(ConfigError, match="already quantized"):
        measure_onnx(q, "ort-int8-u8s8")
    with pytest.raises(ConfigError, match="not found"):
        measure_onnx(tmp_path / "missing.onnx", "ort-fp32")
    with pytest.raises(ConfigError, match="cannot run an ONNX"):
        measure_onnx(path, "tflite-int8")


def test_engine_names_and_activation_types_are_checked():
    assert engines.resolve_engine("ort-int8").activation_type == "uint8"
    assert engines.resolve_engine("ort-int8-s8s8").activation_type == "int8"
    assert engines.resolve_engine("tflite-int8").activation_type == "int8"
    with pytest.raises(ConfigError, match="allowed"):
        engines.resolve_engine("ort-int4")
    with pytest.raises(ConfigError, match="activation type"):
        engines.resolve_engine("ort-fp32", "uint8")
    with pytest.raises(ConfigError, match="activation type"):
        engines.resolve_engine("tflite-int8", "uint8")


def test_fingerprint_identifies_device_and_settings():
    flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0].split()
    fp = device_fingerprint("ort-int8", 1)
    assert fp["avx512_vnni"] == ("avx512_vnni" in flags)
    assert [f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags] == \
        [f for f in fp["cpu_flags"] if f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")]
    assert fp["cpu_vendor"] in ("AuthenticAMD", "GenuineIntel") or fp["machine"] != "x86_64"
    assert fp["engine_version"].startswith("onnxruntime ")
    other = device_fingerprint("ort-int8", 2, "int8")
    assert fp["fingerprint_id"] != other["fingerprint_id"]
    assert fingerprint_id(fp) == fp["fingerprint_id"]
    diff = fingerprint_mismatch(fp, other)
    assert any(d.startswith("threads") for d in diff) and any(d.startswith("activation_type") for d in diff)
    assert fingerprint_mismatch(fp, dict(fp)) == []


def test_summary_and_pinning():
    assert summarize([4.0, 1.0, 3.0, 2.0, 5.0]) == (3.0, 2.0, 4.0)
    if hasattr(os, "sched_getaffinity"):
        before = os.sched_getaffinity(0)
        cpu = min(before)
        with pinned([cpu]) as used:
            assert os.sched_getaffinity(0) == {cpu} and used == (cpu,)
        assert os.sched_getaffinity(0) == before


@pytest.mark.tflite
@pytest.mark.slow
def test_tflite_int8_real(tmp_path):
    path = prepare_artifact(SMALL, "tflite-int8", tmp_path)
    interp = engines.tflite_interpreter(path.read_bytes(), 1)
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert "CONV_2D" in ops or "DELEGATE" in ops
    from nasq.latency.measure import time_model

    m = time_model(path, "tflite-int8", SMALL[0].key(), repeats=5, warmup=1)
    _check(m, "tflite-int8")
    assert m.fingerprint["engine_version"].startswith("ai_edge_litert ")


@pytest.mark.tflite
def test_tflite_runs_on_litert_not_tf_lite():
    from ai_edge_litert.interpreter import Interpreter

    cls, version = engines.tflite_runtime()
    assert cls is Interpreter and version.startswith("ai_edge_litert ")
    assert device_fingerprint("tflite-int8", 1)["engine_version"] == version


def test_tflite_without_litert_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install ai-edge-litert"):
        engines.tflite_runtime()
