"""Data loading and splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.data import load_dataset
from nasq.errors import DataError


def _ids(ds) -> set[bytes]:
    return {x.numpy().tobytes() for x in ds.tensors[0]}


def test_digits_splits_disjoint_seeded_and_normalised() -> None:
    s = load_dataset("digits", seed=3)
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    n = len(s.train) + len(s.val) + len(s.test)
    assert n == 1797
    assert abs(len(s.test) - 0.2 * n) <= 1 and abs(len(s.val) - 0.1 * n) <= 1
    x, y = s.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1.0) < 0.05
    # digits contains a few duplicated images; compare index sets through a second load instead
    t = load_dataset("digits", seed=3)
    assert torch.equal(s.val.tensors[0], t.val.tensors[0]) and torch.equal(
        s.test.tensors[1], t.test.tensors[1]
    )
    u = load_dataset("digits", seed=4)
    assert not torch.equal(s.val.tensors[0], u.val.tensors[0])
    for split in (s.train, s.val, s.test):  # stratified: every class in every split
        assert len(torch.unique(split.tensors[1])) == 10


def test_splits_disjoint_on_unique_images(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 4, 4, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = load_dataset(f"npz:{tmp_path / 'd.npz'}", seed=0)
    assert s.input_shape == (3, 4, 4) and s.num_classes == 3
    a, b, c = _ids(s.train), _ids(s.val), _ids(s.test)
    assert len(a) + len(b) + len(c) == 300 and not (a & b or a & c or b & c)
    lim = load_dataset(f"npz:{tmp_path / 'd.npz'}", seed=0, limit=60)
    assert len(lim.train) + len(lim.val) + len(lim.test) == 60


def test_shared_cifar10_npz(shared_data) -> None:
    path = shared_data / "cifar10" / "cifar10_test_2000.npz"
    s = load_dataset(f"npz:{path}", seed=0, limit=500)
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10
    assert len(s.train) + len(s.val) + len(s.test) == 500


def test_bad_npz_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    np.savez(tmp_path / "nokey.npz", x=np.zeros((10, 4, 4, 1), np.uint8))
    with pytest.raises(DataError, match="'y'"):
        load_dataset(f"npz:{tmp_path / 'nokey.npz'}")
    np.savez(tmp_path / "float.npz", x=np.zeros((10, 4, 4, 1), np.float32), y=np.zeros(10, np.int64))
    with pytest.raises(DataError, match="uint8"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    np.savez(tmp_path / "shape.npz", x=np.zeros((10, 4), np.uint8), y=np.zeros(10, np.int64))
    with pytest.raises(DataError, match="shape"):
        load_dataset(f"npz:{tmp_path / 'shape.npz'}")
    np.savez(tmp_path / "len.npz", x=np.zeros((10, 4, 4, 1), np.uint8), y=np.zeros(9, np.int64))
    with pytest.raises(DataError, match="labels"):
        load_dataset(f"npz:{tmp_path / 'len.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("mnist")


def test_huge_label_is_refused_before_any_allocation(tmp_path) -> None:
    """A label of 1e9 would make a 1e9-way classifier (terabytes): refused, naming the label and the fix."""
    y = np.repeat(np.arange(3), 20)
    y[5] = 10**9
    np.savez(tmp_path / "big.npz", x=np.zeros((60, 4, 4, 1), np.uint8), y=y)
    with pytest.raises(DataError, match=r"label 1000000000.*renumber"):
        load_dataset(f"npz:{tmp_path / 'big.npz'}")
    y[5] = 60  # more classes than examples is refused too; 59 would be allowed by the bound
    np.savez(tmp_path / "many.npz", x=np.zeros((60, 4, 4, 1), np.uint8), y=y)
    with pytest.raises(DataError, match="num_classes <= 60"):
        load_dataset(f"npz:{tmp_path / 'many.npz'}")


def test_truncated_and_foreign_npz_are_data_errors(tmp_path) -> None:
    np.savez(tmp_path / "ok.npz", x=np.zeros((600, 4, 4, 1), np.uint8), y=np.repeat(np.arange(3), 200))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # zip magic, no central directory
    with pytest.raises(DataError, match="truncated"):
        load_dataset(f"npz:{tmp_path / 'cut.npz'}")
    np.save(tmp_path / "one.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="not an npz archive"):
        load_dataset(f"npz:{tmp_path / 'one.npy'}")
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(f"npz:{tmp_path}")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4, 4, 1), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(DataError):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}")


def test_separate_test_set_is_normalised_with_the_training_statistics(tmp_path):
    import numpy as np

    from nasq.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 4, 4, 3), dtype=np.uint8)
    y = np.repeat(np.arange(4), 50)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:40], y=y[:40])  # the same images as some training ones
    s = load_dataset(f"npz:{tmp_path / 'train.npz'}", limit=None, test_data=f"npz:{tmp_path / 'test.npz'}")
    assert len(s.test) == 40 and len(s.train) + len(s.val) == 200 and len(s.val) == 20
    flat = {tuple(v.numpy().ravel().round(5)) for v in torch.cat([s.train.tensors[0], s.val.tensors[0]])}
    assert all(tuple(v.numpy().ravel().round(5)) in flat for v in s.test.tensors[0])  # same normalisation
    np.testing.assert_array_equal(s.test.tensors[1].numpy(), y[:40])
    np.savez(tmp_path / "odd.npz", x=x[:10, :2], y=y[:10])
    with pytest.raises(DataError, match="same image shape"):
        load_dataset(f"npz:{tmp_path / 'train.npz'}", test_data=f"npz:{tmp_path / 'odd.npz'}")
