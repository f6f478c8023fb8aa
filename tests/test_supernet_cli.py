"""``nasq supernet train|eval`` and ``nasq resume`` of a supernet run (SpaceEvo §5): one-line errors before
Ray starts. The Ray Train runs themselves (2 workers, SIGKILL mid-training, resume at the next epoch,
``nasq report`` curves, ``nasq supernet eval``) are in tests/test_pipeline.py, whose phase 4 is one."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasq.cli.main import main
from nasq.settings import SupernetSettings
from nasq.supernet.run import RUN_FILE, read_run_settings, write_run_file

SPACE = "mbv3:16-24|fused_mb_se:24-32|resnet_bottleneck:32-40"
TINY = ["--space", SPACE, "--hyperspace", "spaceevo-tiny", "--data-limit", "300", "--batch-size", "16",
        "--bn-batches", "1", "--n-random", "1", "--workers", "2"]
TRAIN = ["supernet", "train", *TINY]


def _one_line_error(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nasq: error:") and "\n" not in err and match in err, err


@pytest.mark.parametrize("argv, match", [
    (["supernet", "train"], "space (--space) is required"),
    (["supernet", "train", "--space", "mbv2:16-40"], "has 1 stages"),
    (["supernet", "train", "--space", "warp:16-24|mbv2:24-32|mbv2:32-40", "--hyperspace", "spaceevo-tiny"],
     "warp"),
    ([*TRAIN, "--device", "gpu"], "--device"),
    ([*TRAIN, "--epochs", "0", "--qat-epochs", "0"], "epochs + qat_epochs"),
    ([*TRAIN, "--lr", "-1"], "--lr"),
    ([*TRAIN, "--data", "npz:/nonexistent.npz"], "nonexistent"),
    ([*TRAIN, "--from-search", "/nonexistent"], "give --space or --from-search, not both"),
    (["supernet", "train", "--from-search", "/nonexistent"], "/nonexistent"),
    (["supernet", "eval", "/nonexistent", "--subnet", "largest"], "nasq-supernet.json"),
])
def test_bad_input_is_one_line_before_ray(argv, match, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started for a bad input"))
    _one_line_error(argv, capsys, match)


def test_run_file_keeps_the_first_settings(tmp_path, capsys):
    same = dict(space=SPACE, hyperspace="spaceevo-tiny", data_limit=300, batch_size=16, bn_batches=1, n_random=1)
    write_run_file(tmp_path / "r", SupernetSettings(**same, epochs=1))
    write_run_file(tmp_path / "r", SupernetSettings(**same, epochs=5))
    assert read_run_settings(tmp_path / "r").epochs == 5  # a longer run of the same supernet is fine
    _one_line_error([*TRAIN, "--lr", "0.2", "--storage", str(tmp_path), "--name", "r"],
                    capsys, "other lr")
    (tmp_path / "r" / RUN_FILE).write_text("{not json")
    _one_line_error(["supernet", "eval", str(tmp_path / "r"), "--subnet", "largest"], capsys, "unreadable")
    _one_line_error(["resume", str(tmp_path / "r")], capsys, "unreadable")
