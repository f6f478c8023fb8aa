"""A supernet run directory (SpaceEvo §5): its settings file, checkpoints, report and evaluation.

``RUN_DIR = STORAGE/NAME`` is Ray Train's run folder; nasq adds ``nasq-supernet.json`` (the resolved
:class:`~nasq.settings.SupernetSettings`, written before Ray starts) and, on ``nasq report``,
``supernet_metrics.csv`` + ``supernet_curves.png``. Ray Train writes ``checkpoint_*/supernet.pt``
(:mod:`nasq.supernet.launch`); each carries the metrics of every epoch so far, so a killed run can be
reported and resumed (``nasq resume RUN_DIR``) from its files alone. Reading needs no Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

from nasq.errors import CheckpointError, ConfigError, bad_state, check_state_header
from nasq.runfile import atomic_write
from nasq.settings import SupernetSettings

RUN_FILE = "nasq-supernet.json"
RUN_FORMAT = "nasq.supernet.run"
RUN_VERSION = 1
METRICS_CSV = "supernet_metrics.csv"
CURVES_PNG = "supernet_curves.png"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's list of registered checkpoints
FIX = "pass the directory `nasq supernet train` printed (it holds nasq-supernet.json)"


def is_supernet_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a supernet run file."""
    return (Path(run_dir) / RUN_FILE).is_file()


def read_run_settings(run_dir: str | Path) -> SupernetSettings:
    """The settings of a supernet run (§5).

    Raises:
        CheckpointError: no run file, or one that is corrupt or of another kind.
    """
    path = Path(run_dir).expanduser() / RUN_FILE
    if not path.is_file():
        raise CheckpointError(bad_state(path.parent, "no nasq-supernet.json here", FIX))
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(bad_state(path, f"unreadable JSON ({exc})", "train it again")) from None
    doc = check_state_header(doc, RUN_FORMAT, RUN_VERSION, path, "supernet run file", FIX)
    try:
        return SupernetSettings.from_dict(doc.get("settings"), path)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(bad_state(path, f"bad settings ({exc})", "train it again")) from None


def write_run_file(run_dir: str | Path, settings: SupernetSettings) -> Path:
    """Write ``settings`` into ``run_dir`` (made if missing), atomically (§5 runs are resumable).

    A run directory that already holds settings keeps them: the new ones must agree on everything but
    the phase lengths, workers and device (:meth:`SupernetSettings.result_fields`).

    Raises:
        ConfigError: the folder holds a run with other settings.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file; pass another --storage or --name")
    if is_supernet_run(run_dir):
        old = read_run_settings(run_dir)
        diff = sorted(k for k, v in settings.result_fields().items() if old.result_fields().get(k) != v)
        if diff:
            raise ConfigError(f"{run_dir} holds a supernet run with other {', '.join(diff)}; continue it with "
                              f"`nasq resume {run_dir}` or pass another --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"format": RUN_FORMAT, "version": RUN_VERSION, "settings": settings.to_config()}
    atomic_write(run_dir / RUN_FILE, json.dumps(doc, indent=2, sort_keys=True))
    return run_dir / RUN_FILE


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's latest checkpoint folder: the last one Ray Train registered in its snapshot file, else
    the newest ``checkpoint_*`` folder holding ``supernet.pt`` (Ray Train names them by time)."""
    from nasq.supernet.launch import CHECKPOINT_FILE

    run_dir = Path(run_dir)
    try:
        doc = json.loads((run_dir / SNAPSHOT_FILE).read_text())
        name = doc["checkpoint_results"][-1]["checkpoint_dir_name"]
        if (run_dir / name / CHECKPOINT_FILE).is_file():
            return run_dir / name
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    found = sorted(p.parent for p in run_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    return found[-1] if found else None


def load_latest(run_dir: str | Path) -> tuple[SupernetSettings, dict]:
    """Settings and latest checkpoint document of a run (``weights_only=True``; §5).

    Raises:
        CheckpointError: not a supernet run, or no epoch finished yet.
    """
    from nasq.supernet.launch import load_checkpoint_state

    settings = read_run_settings(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(bad_state(run_dir, "no checkpoint yet (no epoch finished)",
                                        f"continue it with `nasq resume {run_dir}`"))
    return settings, load_checkpoint_state(str(ckpt))


def resume_supernet(run_dir: str | Path, address: str | None = None) -> dict:
    """Continue a supernet run at the epoch after its last checkpoint (§5; ``nasq resume``).

    A run whose last checkpoint is its final epoch is not started again: the result has
    ``epochs_run`` 0 and that checkpoint's metrics.
    """
    from nasq.runner import connect_ray
    from nasq.supernet.launch import train_supernet

    run_dir = Path(run_dir).expanduser().resolve()
    settings = read_run_settings(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        _, state = load_latest(run_dir)
        if state["epoch"] + 1 >= settings.epochs + settings.qat_epochs:
            history = state.get("history", [])
            return {"metrics": dict(history[-1]) if history else {}, "checkpoint": str(ckpt),
                    "path": str(run_dir), "epochs_run": 0, "history": history}
    connect_ray(address)
    return train_supernet(settings, str(run_dir.parent), run_dir.name)


def history_frame(run_dir: str | Path):
    """Per-epoch metrics of the latest checkpoint as a DataFrame (one row per epoch; §5 curves)."""
    import pandas as pd

    _, state = load_latest(run_dir)
    rows = [{k: v for k, v in m.items() if not isinstance(v, (list, dict))} for m in state.get("history", [])]
    return pd.DataFrame(rows)


def write_supernet_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``supernet_metrics.csv`` and ``supernet_curves.png`` (loss and accuracy per epoch; §5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    frame = history_frame(run_dir)
    csv, png = run_dir / METRICS_CSV, run_dir / CURVES_PNG
    frame.to_csv(csv, index=False)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for col in [c for c in frame if c.startswith("loss_")]:
        left.plot(frame["epoch"], frame[col], marker="o", label=col[5:])
    for col in ("acc_largest", "acc_smallest"):
        if col in frame:
            right.plot(frame["epoch"], 100 * frame[col], marker="o", label=col[4:])
    qat = frame.loc[frame["phase"] == "qat", "epoch"]
    for ax, label in ((left, "training loss"), (right, "validation accuracy %")):
        if len(qat):
            ax.axvspan(qat.min() - 0.5, qat.max() + 0.5, color="0.9", label="LSQ+ INT8 phase")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"supernet {run_dir.name}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return csv, png


def torch_device(name: str = "auto"):
    """The device of a choice ``auto | cpu | cuda`` (auto: CUDA when torch sees one; §5 on CUDA).

    Raises:
        ConfigError: ``cuda`` without a CUDA device, or an unknown name.
    """
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device here; use --device auto or cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


class InheritedSubnets:
    """A trained supernet ready to measure its subnets with inherited weights (SpaceEvo §5, no retraining).

    Loads the run's latest checkpoint (or ``checkpoint``, a ``supernet.pt`` file or its folder) once, and
    the data splits once; :meth:`accuracy` then recalibrates BatchNorm for a subnet on ``bn_batches``
    training batches and measures it in fp32 or with INT8 fake quantization (the LSQ+ phase's scales).

    Raises:
        CheckpointError: not a supernet run, or no checkpoint yet.
    """

    def __init__(self, run_dir: str | Path, device: str = "auto", checkpoint: str | Path | None = None,
                 bn_batches: int | None = None) -> None:
        from nasq.quant.lsq import set_quant
        from nasq.supernet.launch import batches, load_checkpoint_state, load_images
        from nasq.supernet.model import Supernet

        if checkpoint is None:
            self.settings, state = load_latest(run_dir)
        else:
            path = Path(checkpoint)
            self.settings = read_run_settings(run_dir)
            state = load_checkpoint_state(str(path.parent if path.is_file() else path))
        self.epoch, self.phase = int(state["epoch"]), str(state["phase"])
        s = self.settings
        self.net = Supernet.from_string(s.space, s.hyperspace)
        set_quant(self.net, self.phase == "qat")
        self.net.load_state_dict(state["model"])
        self.net.to(torch_device(device))
        self.bn_batches = bn_batches or s.bn_batches
        train, val, test = load_images(s, self.net.space.hyperspace.resolution)
        self.calib = batches(*train, s.batch_size)[:self.bn_batches]
        self.splits = {"val": batches(*val, s.batch_size), "test": batches(*test, s.batch_size)}

    @property
    def int8_trained(self) -> bool:
        """Whether the checkpoint is from the LSQ+ phase (its quantizer scales are trained)."""
        return self.phase == "qat"

    def accuracy(self, subnet, split: str = "val", int8: bool = True) -> float:
        """Top-1 accuracy of ``subnet`` (genome or string) on ``split``, BN recalibrated (§5).

        Raises:
            ConfigError: ``int8`` before the LSQ+ phase, or an unknown split.
            GenomeError: a subnet string the space refuses.
        """
        from nasq.quant.lsq import set_quant
        from nasq.supernet.train import evaluate

        if split not in self.splits:
            raise ConfigError(f"split must be test or val, got {split!r}")
        if int8 and not self.int8_trained:
            raise ConfigError("the supernet has no LSQ+ epoch yet; train it with --qat-epochs >= 1")
        set_quant(self.net, int8)
        return evaluate(self.net, subnet, self.splits[split], self.calib, self.bn_batches)


def evaluate_run(run_dir: str | Path, subnet: str, device: str = "auto", split: str = "test") -> dict:
    """Accuracy of one subnet of a trained supernet, weights inherited (SpaceEvo §5, no retraining).

    BatchNorm is recalibrated for the subnet on ``bn_batches`` training batches, then the subnet is
    evaluated on ``split`` (``test`` or ``val``) in fp32 and, once the LSQ+ phase has run, with INT8
    fake quantization.

    Returns:
        ``subnet``, ``epoch``, ``phase``, ``examples``, ``fp32_acc`` and ``int8_acc`` (``None`` before QAT).

    Raises:
        GenomeError: a subnet string the run's space refuses (before any data is read).
        CheckpointError: not a supernet run, or no checkpoint yet.
    """
    from nasq.spaces.spaceevo import space_from_name

    if split not in ("test", "val"):
        raise ConfigError(f"split must be test or val, got {split!r}")
    s = read_run_settings(run_dir)
    genome = space_from_name(s.hyperspace).candidate(s.space).decode(subnet)
    ev = InheritedSubnets(run_dir, device)
    out = {"subnet": ev.net.space.encode(genome), "epoch": ev.epoch, "phase": ev.phase, "split": split,
           "examples": sum(len(y) for _, y in ev.splits[split]), "int8_acc": None}
    if ev.int8_trained:
        out["int8_acc"] = ev.accuracy(genome, split, int8=True)
    out["fp32_acc"] = ev.accuracy(genome, split, int8=False)
    return out
