"""Image data sets read offline: bundled digits, MNIST IDX, CIFAR-10, GTSRB, and the user's own.

Every loader returns float32 NCHW images in [0, 1] (a :class:`DataSplit`; the user's own a :class:`StreamedSplit`). Sets that ship only a
test set (MNIST, GTSRB here) are split deterministically: a permutation drawn with
``numpy.random.default_rng(0)`` over the whole file, the first part for training, the rest for test.
The user's own data (``folder``, ``npz`` at ``path``) is read by :mod:`robustbench_local.data_user`; the
object-on-scene sets (``mnist_scenes*``) by :mod:`robustbench_local.data_scenes`; the captioning sets
(``mnist_captions``, ``cifar_captions``; token ids as ``y``) by :mod:`robustbench_local.data_captions`.
"""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rbl_core.data import AnySplit, DataError, DataSplit, StreamedSplit
from robustbench_local.data_captions import CAPTION_SETS, CAPTION_SPECS, caption_split
from robustbench_local.data_scenes import SCENE_SETS, scene_split
from robustbench_local.data_user import USER_DATASETS, load_user_dataset

__all__ = ["AnySplit", "DataError", "DataSplit", "StreamedSplit", "DATASETS", "load_dataset", "default_data_root"]

DATASETS = ("digits", "mnist", "cifar10", "gtsrb") + tuple(SCENE_SETS) + CAPTION_SETS + USER_DATASETS
SPLIT_SEED = 0
# Train/test sizes for sets carved out of a single file (documented in the README).
CARVED_SPLITS = {"digits": 1400, "mnist": 8000, "gtsrb": 10000}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def default_data_root() -> Path:
    """``$RBL_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get("RBL_DATA_ROOT", "data")).expanduser()


def _require(path: Path, dataset: str, hint: str) -> Path:
    if not path.exists():
        raise DataError(f"{dataset}: missing file {path}. {hint}")
    return path


def _to_split(images: np.ndarray, labels: np.ndarray, name: str, split: str, classes: tuple[str, ...],
              channels_last: bool) -> DataSplit:
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if x.max() > 1.0:
        x = x / 255.0
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif channels_last:
        x = x.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return DataSplit(x, y, len(classes), name, split, classes)


def _carve(n_total: int, n_train: int, split: str) -> np.ndarray:
    order = np.random.default_rng(SPLIT_SEED).permutation(n_total)
    if split == "train":
        return order[:n_train]
    if split == "test":
        return order[n_train:]
    if split == "all":
        return np.arange(n_total)
    raise DataError(f"unknown split {split!r}: choose train, test or all")


def _load_digits(root: Path, split: str) -> DataSplit:
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = _carve(len(d.target), CARVED_SPLITS["digits"], split)
    images = (d.images[idx] / 16.0).astype(np.float32)
    return _to_split(images, d.target[idx], "digits", split, tuple(str(i) for i in range(10)), False)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"mnist: cannot read {path} ({err}); re-download the IDX file") from err
    return np.frombuffer(raw, np.uint8, offset=offset)


def _find(root: Path, names: list[str]) -> Path | None:
    for name in names:
        for candidate in (root / name, root / "mnist" / name):
            if candidate.exists():
                return candidate
    return None


def _load_mnist(root: Path, split: str) -> DataSplit:
    hint = f"Put t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in {root} or {root / 'mnist'}, or set dataset.root."
    img_path = _find(root, ["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"])
    lbl_path = _find(root, ["t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"])
    if img_path is None or lbl_path is None:
        raise DataError(f"mnist: missing IDX files under {root}. {hint}")
    images, labels = _read_idx(img_path, 16), _read_idx(lbl_path, 8)
    if images.size % 784 or images.size // 784 != labels.size:
        raise DataError(f"mnist: {img_path} holds {images.size} bytes of pixels for {labels.size} labels; "
                        "the file is truncated or not an IDX image file")
    images = images.reshape(-1, 28, 28)
    idx = _carve(len(labels), CARVED_SPLITS["mnist"], split)
    return _to_split(images[idx], labels[idx], "mnist", split, tuple(str(i) for i in range(10)), False)


def _load_npz(path: Path, dataset: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as d:
            x, y = d["x"], d["y"]
            names = tuple(str(c) for c in d["class_names"]) if "class_names" in d else ()
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{dataset}: {path} is not a valid .npz with arrays x, y ({err})") from err
    if x.ndim != 4 or x.shape[0] != y.shape[0]:
        raise DataError(f"{dataset}: {path} has x of shape {x.shape} and y of shape {y.shape}; expected (N, H, W, C) and (N,)")
    return x, y, names


class _SafeBatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's official batches while refusing every global but numpy array rebuilding."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) not in self._ALLOWED:
            raise DataError(f"cifar10: batch file refers to {module}.{name}; refusing to unpickle it")
        return super().find_class(module, name)


def _cifar_batches(root: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    base = next((p for p in (root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py") if p.exists()), None)
    if base is None:
        return None
    files = ["test_batch"] if split != "train" else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    for name in files:
        path = _require(base / name, "cifar10", "The official python batches must be complete.")
        with open(path, "rb") as fh:
            batch = _SafeBatchUnpickler(fh, encoding="bytes").load()
        xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[b"labels"]))
    return np.concatenate(xs), np.concatenate(ys)


def _load_cifar10(root: Path, split: str) -> DataSplit:
    batches = _cifar_batches(root, split) if split in ("train", "test_full") else None
    if batches is not None:
        return _to_split(batches[0], batches[1], "cifar10", split, CIFAR10_CLASSES, True)
    files = {"train": "cifar10_train_exact4660.npz", "test": "cifar10_test_exact846.npz",
             "test_full": "cifar10_test_jpeg.npz"}
    if split not in files:
        raise DataError(f"cifar10: unknown split {split!r}: choose one of {sorted(files)}")
    path = next((p for p in (root / files[split], root / "cifar10" / files[split]) if p.exists()), None)
    if path is None:
        raise DataError(f"cifar10: missing file {root / 'cifar10' / files[split]}. Point dataset.root at the folder "
                        "holding cifar10/*.npz (e.g. ../shared/datasets) or at cifar-10-batches-py.")
    x, y, names = _load_npz(path, "cifar10")
    return _to_split(x, y, "cifar10", split, names or CIFAR10_CLASSES, True)


def _load_gtsrb(root: Path, split: str) -> DataSplit:
    path = next((p for p in (root / "gtsrb_test_32x32.npz", root / "gtsrb" / "gtsrb_test_32x32.npz") if p.exists()), None)
    if path is None:
        raise DataError(f"gtsrb: missing file {root / 'gtsrb' / 'gtsrb_test_32x32.npz'}. Point dataset.root at the "
                        "folder holding gtsrb/gtsrb_test_32x32.npz (e.g. ../shared/datasets).")
    x, y, names = _load_npz(path, "gtsrb")
    idx = _carve(len(y), CARVED_SPLITS["gtsrb"], split)
    return _to_split(x[idx], y[idx], "gtsrb", split, names or tuple(str(i) for i in range(43)), True)


def _scene_loader(name: str) -> Callable[[Path, str], DataSplit]:
    # Scene sets composite the whole MNIST split first, so "first n" is the same images for every n.
    return lambda root, split: scene_split(name, split, _load_mnist(root, split))


_LOADERS = {"digits": _load_digits, "mnist": _load_mnist, "cifar10": _load_cifar10, "gtsrb": _load_gtsrb,
            **{name: _scene_loader(name) for name in SCENE_SETS},
            **{name: (lambda root, split, name=name: caption_split(
                name, split, _LOADERS[CAPTION_SPECS[name][1]](root, split))) for name in CAPTION_SETS}}


def load_dataset(name: str, split: str = "test", root: str | Path | None = None, n: int | None = None,
                 size: int | None = None, *, path: str | Path | None = None, seed: int = 0) -> AnySplit:
    """Split ``split`` of data set ``name``; ``n`` keeps the first n, ``size`` resizes (bilinear).

    ``folder`` and ``npz`` read ``path`` instead of ``root`` and take a stratified subset of ``n`` drawn
    with ``seed`` (see :func:`robustbench_local.data_user.stratified_indices`); ``seed`` is used by them only.
    They come as a :class:`StreamedSplit` (images read batch by batch); the built-in sets, which are small,
    as a :class:`DataSplit` in memory.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if n is not None and n <= 0:
        raise DataError(f"dataset.n must be positive, got {n}")
    if name in USER_DATASETS:
        return load_user_dataset(name, path, split, n=n, size=size, seed=seed)
    if path not in (None, ""):
        # A silently ignored path would evaluate the built-in set while the user thinks it is theirs.
        raise DataError(f"dataset.path is read only by dataset=folder / dataset=npz; dataset={name} reads dataset.root")
    data = _LOADERS[name](Path(root).expanduser() if root else default_data_root(), split)
    if n is not None:
        data = data.subset(n)
    if size is not None and size != data.x.shape[-1]:
        x = F.interpolate(data.x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        data = DataSplit(x, data.y, data.num_classes, data.name, data.split, data.class_names)
    return data
