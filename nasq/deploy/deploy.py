"""Deploy subnets of a trained supernet as real INT8 files and measure what the search promised (SpaceEvo §5).

For each subnet, :func:`deploy_subnet` takes the weights the supernet holds for it (BatchNorm recalibrated
on a few training batches, as the search evaluated it), then

* ``onnx``: :func:`nasq.deploy.onnx_export.export_onnx_int8` (QDQ carrying the LSQ+ scales), timed by
  :func:`nasq.latency.measure.measure_onnx` (the predictor's harness and engine settings, ``ort-int8``)
  and run on the test split by a plain ``onnxruntime.InferenceSession``;
* ``tflite``: :func:`nasq.deploy.tflite_export.export_tflite_int8` (weights copied into the Keras twin,
  full-integer, calibrated on training images), timed on ``tflite-int8`` and run by the LiteRT interpreter.

Each file gets one row in ``OUT/deploy.json`` / ``deploy.csv``: measured INT8 latency, predicted latency
(when a predictor of that engine is given), the exported file's INT8 test accuracy and the supernet's
fake-quant test accuracy for the same subnet.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nasq.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
ENGINE_OF = {"onnx": "ort-int8", "tflite": "tflite-int8"}
DEPLOY_JSON, DEPLOY_CSV = "deploy.json", "deploy.csv"


def formats_of(text: str) -> tuple[str, ...]:
    """``onnx``, ``tflite`` or ``both`` -> the formats to write."""
    if text == "both":
        return FORMATS
    if text not in FORMATS:
        raise ConfigError(f"--format {text!r} is not onnx, tflite or both")
    return (text,)


def onnx_predict(path: str | Path, images: torch.Tensor, threads: int = 1) -> np.ndarray:
    """Logits of an exported ONNX file on NCHW ``images``, one at a time (its batch is 1), with ORT."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = images.numpy().astype(np.float32)
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _accuracy(logits: np.ndarray, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y.numpy()).mean())


def deploy_subnet(ev, subnet: str, formats: Sequence[str], out: Path, *, predictors: dict | None = None,
                  repeats: int = 50, warmup: int = 10, calib_images: int = 128) -> list[dict]:
    """Export one subnet in ``formats`` and measure each file (SpaceEvo §5 deployment).

    Args:
        ev: the supernet (:class:`nasq.supernet.run.InheritedSubnets`).
        subnet: the subnet string.
        formats: among :data:`FORMATS`.
        out: folder of the files (``<format>/<subnet hash>.onnx|.tflite``).
        predictors: engine name -> :class:`nasq.latency.predictor.LatencyPredictor` for predicted latency.
        repeats, warmup: timing runs of the measurement harness.
        calib_images: training images the TFLite converter calibrates on.

    Returns:
        One row per file.
    """
    import hashlib

    from nasq.bkd.teacher import prepare_images
    from nasq.deploy.quant_subnet import extract_quantized_subnet
    from nasq.latency.measure import measure_onnx, time_model

    net = ev.net.cpu()
    genome = net.space.decode(subnet)
    text = net.space.encode(genome)
    fq_acc = ev.accuracy(genome, "test", int8=True)  # leaves BN recalibrated under fake quantization
    bn_int8 = True
    res = net.space.hyperspace.resolution
    x_test = torch.cat([x for x, _ in ev.splits["test"]])
    y_test = torch.cat([y for _, y in ev.splits["test"]])
    specs = net.space.blocks(genome)
    tag = hashlib.sha256(text.encode()).hexdigest()[:12]
    rows = []
    for fmt in formats:
        engine = ENGINE_OF[fmt]
        path = out / fmt / f"{tag}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "onnx":
            from nasq.deploy.onnx_export import export_onnx_int8

            if not bn_int8:  # a TFLite export before this one left fp32 BN statistics
                ev.accuracy(genome, "test", int8=True)
                bn_int8 = True
            net.set_active(genome)
            net.eval()
            export_onnx_int8(extract_quantized_subnet(net, genome), res, path)
            acc = _accuracy(onnx_predict(path, x_test), y_test)
            m = measure_onnx(path, engine, repeats=repeats, warmup=warmup)
        else:
            from nasq.deploy.tflite_export import export_tflite_int8, tflite_predict

            calib = torch.cat([x for x, _ in ev.calib])[:calib_images]
            ev.accuracy(genome, "test", int8=False)  # fp32 BN statistics: the converter quantizes fp32
            bn_int8 = False
            net.set_active(genome)
            net.eval()
            export_tflite_int8(net.extract_subnet(genome), specs, prepare_images(calib, res), path)
            acc = _accuracy(tflite_predict(path, x_test), y_test)
            m = time_model(path, engine, text, repeats=repeats, warmup=warmup)
        pred = (predictors or {}).get(engine)
        predicted = float(pred.predict_model(specs)) if pred is not None else None
        rows.append({"subnet": text, "format": fmt, "file": str(path), "engine": engine,
                     "measured_ms": m.median_ms, "measured_p25_ms": m.p25_ms, "predicted_ms": predicted,
                     "latency_error": None if predicted is None else m.median_ms / predicted - 1,
                     "file_int8_test_acc": acc, "fake_quant_test_acc": fq_acc, "acc_gap_pt":
                     100 * (acc - fq_acc), "test_images": len(y_test), "load_1min": m.load_avg[0]})
        log.info("%s %s: %.3f ms measured, acc %.4f (fake-quant %.4f)", fmt, text, m.median_ms, acc, fq_acc)
    return rows


def write_deploy(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """``deploy.json`` and ``deploy.csv`` of the exported files (§5: measured against promised)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / DEPLOY_JSON).write_text(json.dumps(rows, indent=2))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / DEPLOY_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return out / DEPLOY_JSON, out / DEPLOY_CSV
