"""TensorFlow and torch's compiler stack coexist in one process whatever is used first."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.tflite


def test_keras_then_torch_dynamo_does_not_crash():
    code = ("from nasq.blocks.keras_blocks import keras; keras(); "
            "import torch._dynamo; print('both loaded')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "both loaded" in proc.stdout
