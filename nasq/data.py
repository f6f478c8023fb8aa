"""Data sets for the searches: digits (embedded), CIFAR-10 (torchvision) and any ``.npz`` of images.

Every data set is split once, with a fixed seed, into stratified train / validation / test parts
(JASQ §4: architectures are selected on held-out validation data; the test split is only for final
reports). Images become float32 ``N,C,H,W`` tensors normalised per channel with the *training*
split's mean and standard deviation; labels are int64.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nasq.errors import DataError

log = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "npz:PATH")
MAX_CLASSES = 10_000  # largest number of classes an npz data set may have (labels 0 .. MAX_CLASSES-1)


@dataclass(frozen=True)
class Splits:
    """Train / validation / test splits of one data set."""

    train: TensorDataset  # x float32 (N,C,H,W) normalised, y int64
    val: TensorDataset  # held out from training, used for search fitness
    test: TensorDataset  # held out from everything, used for final reports only
    num_classes: int  # labels are 0 .. num_classes-1
    input_shape: tuple[int, int, int]  # (C, H, W)


def load_dataset(
    spec: str = "digits",
    *,
    data_root: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    limit: int | None = None,
    test_data: str | None = None,
) -> Splits:
    """Load a data set and split it into stratified, seeded train / val / test parts (JASQ §4).

    Args:
        spec: ``"digits"``, ``"cifar10"`` or ``"npz:PATH"`` (``x`` uint8 N×H×W×C, ``y`` integer labels).
        data_root: folder of the torchvision CIFAR-10 files (``cifar10`` only).
        seed: seed of the subsampling and of the split; equal seeds give equal splits.
        val_fraction: share of the examples held out for validation.
        test_fraction: share held out for testing (``cifar10`` uses its official test set instead).
        limit: keep at most this many examples in total (a stratified, seeded subsample).
        test_data: ``"npz:PATH"`` of a separate test set (e.g. the CIFAR-10 test images): it becomes the
            test split, normalised with the training split's statistics, and ``spec`` is split into
            train / val only.

    Returns:
        The three splits, the number of classes and the ``(C, H, W)`` input shape.
    """
    _check_fractions(val_fraction, test_fraction, limit)
    if spec == "digits":
        x, y = _load_digits()
    elif spec == "cifar10":
        return _cifar10_splits(data_root, seed, val_fraction, limit)
    elif isinstance(spec, str) and spec.startswith("npz:"):
        x, y = load_npz(spec[4:])
    else:
        raise DataError(f"unknown data set {spec!r}; use one of {', '.join(DATASETS)}")
    x, y = _subsample(x, y, limit, seed)
    if test_data is not None:
        if not (isinstance(test_data, str) and test_data.startswith("npz:")):
            raise DataError(f"test data {test_data!r} must be npz:PATH (x uint8 N,H,W,C and y)")
        xt, yt = load_npz(test_data[4:])
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"test images {test_data[4:]!r} are {xt.shape[1:]}, the data set's {x.shape[1:]}; "
                            "pass a test set of the same image shape")
        train_idx, val_idx = _stratified_split(y, val_fraction, seed + 1, "val")
        return _make_splits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], xt, yt)
    rest, test = _stratified_split(y, test_fraction, seed, "test")
    train_idx, val_idx = _stratified_split(y[rest], val_fraction / (1.0 - test_fraction), seed + 1, "val")
    train, val = rest[train_idx], rest[val_idx]
    return _make_splits(x[train], y[train], x[val], y[val], x[test], y[test])


def resolve_spec(spec: str, data_root: str | None = None) -> tuple[str, str | None]:
    """Make the paths of a data set spec absolute, so Ray workers (whose working directory
    is the trial's folder) find the same files as the driver.

    Returns:
        ``(spec, data_root)`` with ``npz:PATH`` and ``data_root`` resolved; other specs unchanged.
    """
    if spec.startswith("npz:"):
        spec = "npz:" + os.path.abspath(os.path.expanduser(spec[4:]))
    if data_root:
        data_root = os.path.abspath(os.path.expanduser(data_root))
    return spec, data_root


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate an image ``.npz``: ``x`` uint8 (N,H,W,C) or (N,H,W), ``y`` integer (N,).

    Returns:
        ``x`` as uint8 (N,H,W,C) and ``y`` as int64.
    """
    if not path:
        raise DataError("empty npz path; write the data set as npz:PATH/TO/FILE.npz")
    if os.path.isdir(path):
        raise DataError(f"npz path {path!r} is a directory; give the .npz file itself as npz:PATH")
    if not os.path.isfile(path):
        raise DataError(f"npz file {path!r} not found; check the path given as npz:PATH")
    x, y = _read_npz_arrays(path)
    if x.dtype != np.uint8:
        raise DataError(f"'x' in {path!r} has dtype {x.dtype}; expected uint8 images (0..255)")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape) == 0:
        raise DataError(f"'x' in {path!r} has shape {x.shape}; expected (N, H, W, C) with N, H, W, C > 0")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"'y' in {path!r} has shape {y.shape} and dtype {y.dtype}; expected 1-D integer labels"
        )
    if len(y) != len(x):
        raise DataError(f"{path!r} has {len(x)} images but {len(y)} labels; they must match")
    _check_labels(y, path)
    return x, y.astype(np.int64)


def _read_npz_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of an npz file; a missing key, a truncated or foreign file is a DataError."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):  # a plain .npy array, not an archive
            raise DataError(f"{path!r} holds one array, not an npz archive; "
                            "write it with numpy.savez(path, x=images, y=labels)")
        with f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise DataError(
                    f"npz file {path!r} lacks key(s) {missing} (has {f.files}); "
                    "it needs 'x' (uint8 N,H,W,C images) and 'y' (integer labels)"
                )
            return f["x"], f["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"cannot read npz file {path!r} ({type(exc).__name__}: {reason}; truncated or not an npz "
            "archive); write it again with numpy.savez(path, x=images, y=labels)"
        ) from exc


def _check_labels(y: np.ndarray, path: str) -> None:
    """Labels must be 0 .. K-1 with K at most :data:`MAX_CLASSES` and at most the number of examples."""
    if len(y) == 0:
        raise DataError(f"'y' in {path!r} is empty; the data set needs at least a few labelled examples")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DataError(f"'y' in {path!r} has negative label {lo}; labels must be 0 .. num_classes-1")
    limit = min(MAX_CLASSES, len(y))
    if hi >= limit:
        raise DataError(
            f"'y' in {path!r} has label {hi}, so {hi + 1} classes for {len(y)} examples; labels must be "
            f"0 .. num_classes-1 with num_classes <= {limit} (at most {MAX_CLASSES} and at most the number "
            "of examples); renumber the labels, e.g. numpy.unique(y, return_inverse=True)[1]"
        )


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images with values 0..16, scaled to 0..255 so every source is uint8 N,H,W,C.
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return x, d.target.astype(np.int64)


def _cifar10_splits(data_root: str | None, seed: int, val_fraction: float, limit: int | None) -> Splits:
    from torchvision.datasets import CIFAR10

    root = data_root or os.path.join(os.path.expanduser("~"), ".cache", "nasq", "cifar10")
    try:
        tr = CIFAR10(root=root, train=True, download=True)
        te = CIFAR10(root=root, train=False, download=True)
    except Exception as exc:  # torchvision raises URLError/RuntimeError/OSError when offline or corrupt
        raise DataError(
            f"CIFAR-10 is not in {root!r} and could not be downloaded ({type(exc).__name__}); "
            "pass --data-root with the torchvision CIFAR-10 files, or use "
            "--dataset npz:PATH"
        ) from exc
    x, y = np.asarray(tr.data, dtype=np.uint8), np.asarray(tr.targets, dtype=np.int64)
    xt, yt = np.asarray(te.data, dtype=np.uint8), np.asarray(te.targets, dtype=np.int64)
    if limit is not None:
        x, y = _subsample(x, y, limit, seed)
        xt, yt = _subsample(xt, yt, max(len(np.unique(yt)) * 2, limit // 5), seed)
    train_idx, val_idx = _stratified_split(y, val_fraction, seed + 1, "val")
    return _make_splits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], xt, yt)


def _check_fractions(val_fraction: float, test_fraction: float, limit: int | None) -> None:
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must lie in (0, 1) "
            "and sum to less than 1"
        )
    if limit is not None and limit < 10:
        raise DataError(f"limit={limit} is too small to split; use at least a few examples per class")


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    keep, _ = _stratified_split(y, 1.0 - limit / len(y), seed + 2, "limit")
    keep = np.sort(keep)
    return x[keep], y[keep]


def _stratified_split(y: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with ``fraction`` of each class held out, seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        kept, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as exc:
        raise DataError(
            f"cannot make a stratified {what} split of {len(y)} examples ({exc}); "
            "use more examples (a larger --limit) or fewer classes"
        ) from exc
    return np.asarray(kept), np.asarray(held)


def _make_splits(
    xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, xte: np.ndarray, yte: np.ndarray
) -> Splits:
    """Convert uint8 N,H,W,C to normalised float32 N,C,H,W with the training split's channel stats."""
    tr = xtr.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = tr.mean(axis=(0, 2, 3), keepdims=True)
    std = tr.std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def norm(x: np.ndarray) -> torch.Tensor:
        f = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return torch.from_numpy(np.ascontiguousarray((f - mean) / std, dtype=np.float32))

    num_classes = int(max(ytr.max(), yva.max(), yte.max())) + 1
    log.info("data: %d train, %d val, %d test, %d classes", len(ytr), len(yva), len(yte), num_classes)
    return Splits(
        train=TensorDataset(norm(xtr), torch.from_numpy(ytr.astype(np.int64))),
        val=TensorDataset(norm(xva), torch.from_numpy(yva.astype(np.int64))),
        test=TensorDataset(norm(xte), torch.from_numpy(yte.astype(np.int64))),
        num_classes=num_classes,
        input_shape=(int(tr.shape[1]), int(tr.shape[2]), int(tr.shape[3])),
    )
