"""Save and load a CUDA-poisoned data set as a plain ``.npz`` (no pickle anywhere)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attacks.unlearnable.unlearnable import CudaConfig, PoisonedImages, poison_images
from rbl_core.data import DataSplit

__all__ = ["PoisonedDataset", "poison_split", "save_poisoned", "load_poisoned", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "x", "y", "poisoned", "kernels", "kernel_size", "blur", "mix", "key", "same",
             "num_classes", "name", "split", "class_names")


@dataclass
class PoisonedDataset:
    """A released (poisoned) split: the uint8 images, labels, and the owner's audit trail."""

    images: PoisonedImages
    num_classes: int
    name: str
    split: str
    class_names: tuple[str, ...]

    def to_split(self) -> DataSplit:
        """The poisoned images as a harness :class:`DataSplit` (float32 in [0, 1])."""
        return DataSplit(self.images.as_float(), self.images.y.clone(), self.num_classes, self.name,
                         self.split, self.class_names)


def poison_split(data: DataSplit, config: CudaConfig = CudaConfig()) -> PoisonedDataset:
    """Poison a harness split with CUDA (class kernels from ``config.key``)."""
    images = poison_images(data.x, data.y, data.num_classes, config)
    return PoisonedDataset(images, int(data.num_classes), data.name, data.split, tuple(data.class_names))


def save_poisoned(path: str | Path, data: PoisonedDataset) -> Path:
    """Write ``data`` to ``path`` (.npz, compressed, strings as fixed-width unicode)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    im, cfg = data.images, data.images.config
    np.savez_compressed(
        path, format_version=np.int64(FORMAT_VERSION),
        x=im.x.numpy(), y=im.y.numpy().astype(np.int64), poisoned=im.poisoned.numpy(),
        kernels=im.kernels.numpy().astype(np.float32),
        kernel_size=np.int64(cfg.kernel_size), blur=np.float64(cfg.blur), mix=np.float64(cfg.mix),
        key=np.int64(cfg.key), same=np.bool_(cfg.same), num_classes=np.int64(data.num_classes),
        name=np.str_(data.name), split=np.str_(data.split),
        class_names=np.array(data.class_names, dtype=np.str_) if data.class_names else np.zeros(0, "<U1"))
    return path


def load_poisoned(path: str | Path) -> PoisonedDataset:
    """Read a file written by :func:`save_poisoned`, checking every array it needs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CUDA: poisoned data set {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
            arr = {k: npz[k] for k in _REQUIRED if k in files}
    except (OSError, EOFError, ValueError) as err:  # not a zip, truncated, or holds pickled objects
        raise ValueError(f"CUDA: cannot read {path} as a pickle-free .npz ({err})") from err
    missing = [k for k in _REQUIRED if k not in arr]
    if missing:
        raise ValueError(f"CUDA: {path} is not a poisoned data set: missing arrays {missing}")
    if int(arr["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"CUDA: {path} has format_version {int(arr['format_version'])}, expected {FORMAT_VERSION}")
    x, y, mask, kernels = arr["x"], arr["y"], arr["poisoned"], arr["kernels"]
    n, num_classes = x.shape[0] if x.ndim else -1, int(arr["num_classes"])
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"CUDA: {path}: x must be uint8 (N, C, H, W), got {x.dtype} {x.shape}")
    if y.shape != (n,) or mask.shape != (n,) or mask.dtype != np.bool_:
        raise ValueError(f"CUDA: {path}: y and poisoned must be ({n},), got {y.shape} and {mask.shape}")
    k = int(arr["kernel_size"])
    if kernels.shape != (num_classes, k, k):
        raise ValueError(f"CUDA: {path}: kernels must be ({num_classes}, {k}, {k}), got {kernels.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"CUDA: {path}: labels outside [0, {num_classes - 1}]")
    config = CudaConfig(kernel_size=k, blur=float(arr["blur"]), mix=float(arr["mix"]), key=int(arr["key"]),
                        same=bool(arr["same"]))
    images = PoisonedImages(torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)),
                            torch.from_numpy(mask.copy()), torch.from_numpy(kernels.astype(np.float32)), config)
    return PoisonedDataset(images, num_classes, str(arr["name"]), str(arr["split"]),
                           tuple(str(c) for c in arr["class_names"]))
