"""`nasq export int8` (SpaceEvo §5): real INT8 ONNX files of a supernet's subnets with deploy.json rows
whose numbers are recomputed here (a plain onnxruntime session, the inherited fake-quant accuracy)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_subnet_search import _supernet_run

from nasq.cli.main import main
from nasq.supernet.run import InheritedSubnets

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory):
    return _supernet_run(tmp_path_factory.mktemp("sn") / "run", qat=True)


@pytest.mark.parametrize("extra, needle", [
    ([], "name the subnets with --subnet"),
    (["--front"], "--front is for a subnet search"),
    (["--subnet", "largest", "--format", "coreml"], "--format 'coreml'"),
    (["--subnet", "mbv3:c99_k3_e3|x|y"], "mbv3"),
    (["--subnet", "largest", "--repeats", "0"], "repeats must be >= 1"),
])
def test_bad_export_inputs_are_one_line(supernet_dir, tmp_path, capsys, extra, needle):
    assert main(["export", "int8", str(supernet_dir), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nasq: error:") and "\n" not in err and needle in err, err
    assert not (tmp_path / "out").exists()


def test_exported_onnx_runs_in_a_plain_session_and_matches_its_row(supernet_dir, tmp_path, capsys):
    out = tmp_path / "dep"
    assert main(["export", "int8", str(supernet_dir), "--subnet", "largest", "--format", "onnx", "--out",
                 str(out), "--repeats", "3", "--warmup", "1"]) == 0
    rows = json.loads((out / "deploy.json").read_text())
    assert len(rows) == 1 and (out / "deploy.csv").is_file()
    row = rows[0]
    assert row["engine"] == "ort-int8" and row["measured_ms"] > 0 and row["predicted_ms"] is None
    ev = InheritedSubnets(supernet_dir, "cpu")
    sub = ev.net.space.encode(ev.net.space.largest())
    assert row["subnet"] == sub
    assert row["fake_quant_test_acc"] == pytest.approx(ev.accuracy(sub, "test", int8=True), abs=1e-12)
    sess = ort.InferenceSession(row["file"], providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in __import__("onnx").load(row["file"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = torch.cat([a for a, _ in ev.splits["test"]]).numpy()
    y = torch.cat([b for _, b in ev.splits["test"]]).numpy()
    pred = np.array([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1]})[0].argmax() for i in range(len(y))])
    assert row["file_int8_test_acc"] == pytest.approx(float((pred == y).mean()), abs=1e-12)
    assert row["test_images"] == len(y) == 60
    assert "measured" in capsys.readouterr().out
