"""Data loaders: shapes, ranges, deterministic disjoint splits, and clear errors for bad files."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_local.data import DataError, load_dataset


def _check(split, n, shape, classes):
    assert len(split) == n
    assert split.x.dtype == torch.float32 and tuple(split.x.shape[1:]) == shape
    assert 0.0 <= float(split.x.min()) and float(split.x.max()) <= 1.0
    assert split.y.dtype == torch.int64 and int(split.y.max()) < classes == split.num_classes


def test_digits_split_is_deterministic_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    _check(train, 1400, (1, 8, 8), 10)
    _check(test, 397, (1, 8, 8), 10)
    assert torch.equal(load_dataset("digits", "test").x, test.x)
    train_rows = {tuple(r.tolist()) for r in train.x.flatten(1)}
    overlap = sum(tuple(r.tolist()) in train_rows for r in test.x.flatten(1))
    assert overlap < 5  # a handful of byte-identical digits exist in the UCI data; the index sets are disjoint
    assert load_dataset("digits", "test", size=28).x.shape[-1] == 28


def test_real_datasets_load_from_shared(data_root):
    _check(load_dataset("mnist", "train", root=data_root), 8000, (1, 28, 28), 10)
    _check(load_dataset("mnist", "test", root=data_root), 2000, (1, 28, 28), 10)
    _check(load_dataset("cifar10", "train", root=data_root), 4660, (3, 32, 32), 10)
    _check(load_dataset("cifar10", "test", root=data_root), 846, (3, 32, 32), 10)
    gtsrb = load_dataset("gtsrb", "test", root=data_root, n=100)
    _check(gtsrb, 100, (3, 32, 32), 43)
    # The exact CIFAR test subset starts with the well-known labels 3, 8, 8, 0, 6.
    assert load_dataset("cifar10", "test", root=data_root).y[:5].tolist() == [3, 8, 8, 0, 6]


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="t10k-images"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 100))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 18))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(DataError, match="gtsrb_test_32x32.npz"):
        load_dataset("gtsrb", root=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


def _write_batch(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def test_official_cifar_batches_load_and_malicious_pickles_are_refused(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    _write_batch(base / "test_batch", {b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4, 5, 6]})
    data = load_dataset("cifar10", "test_full", root=tmp_path)
    assert data.x.shape == (6, 3, 32, 32) and data.y.tolist() == [1, 2, 3, 4, 5, 6]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _write_batch(base / "test_batch", {b"data": Evil(), b"labels": []})
    with pytest.raises(DataError, match="refusing"):
        load_dataset("cifar10", "test_full", root=tmp_path)
