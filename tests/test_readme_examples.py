"""Every ```python block of README.md runs as written (each in its own child process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_the_python_api_examples():
    assert "## Python API" in README.read_text()
    assert len(BLOCKS) >= 3
    assert any("tune.Tuner" in b for b in BLOCKS) and any("JasqSettings" in b for b in BLOCKS)
    assert any("BlockSpec" in b and "predict" in b for b in BLOCKS)
    assert any("TorchTrainer" in b and "Supernet" in b for b in BLOCKS)  # nasq pieces in a Ray Train loop


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"example-{i + 1}")
def test_readme_example_runs(index, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "NASQ_DEBUG")}
    env.update({"NASQ_RAY_DASHBOARD": "0", "NASQ_RAY_NUM_CPUS": "2"})
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()  # every example prints its result
