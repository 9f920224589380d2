"""The user's own evaluation data: an image folder (``dataset=folder``) or an ``.npz`` file (``dataset=npz``).

Both give a :class:`StreamedSplit` of float32 NCHW images in [0, 1] named ``"folder"`` / ``"npz"``: labels and
headers are read and checked at once, the images batch by batch when used, so a data set larger than memory
is evaluated in memory bounded by the batch. They are evaluation data only: the whole source is the ``test``
split and ``split="train"`` is refused.

``n`` (``dataset.n_test``) takes a stratified, seeded subset, see :func:`stratified_indices`; ``size``
(``dataset.size``) resizes every image to size x size with a bilinear filter that is antialiased when
shrinking: Pillow's ``BILINEAR`` for folders (per image, in float) and
``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` for npz arrays, which matches it.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rbl_core.data import DataError, StreamedSplit
from robustbench_local.npz_rows import NpzRows

__all__ = ["USER_DATASETS", "IMAGE_SUFFIXES", "load_user_dataset", "load_folder", "load_npz", "stratified_indices"]

USER_DATASETS = ("folder", "npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Pillow is told to try only these decoders, so a file never reaches a format plugin the user did not mean.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
_GREY_8BIT = ("1", "L", "LA")
_GREY_16BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")   # 16-bit PNGs open as one of these
_DECODE_THREADS = 4


def stratified_indices(labels: np.ndarray | torch.Tensor, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subset of ``n`` examples, stratified by label (all of them if n is None or >= len).

    Each class present gets ``n * count / total`` examples rounded by largest remainder (ties go to the lower
    label); when ``n`` is at least the number of classes present, every class gets at least one, taken from
    the classes with the most to spare. Below that, the ``n`` most frequent classes get one each. Within a
    class the examples are drawn without replacement by ``numpy.random.default_rng(seed)``, so the same seed
    gives the same subset. The indices come back sorted, so the subset keeps the source's order.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    least = 1 if n >= len(classes) else 0
    quota = np.maximum(quota, least)   # never above counts: exact < counts because n < total
    while quota.sum() < n:
        # n < total, so some class still has examples to give.
        gap = np.where(quota < counts, exact - quota, -np.inf)
        quota[int(np.argmax(gap))] += 1
    while quota.sum() > n:
        # Only the minimum of one can overshoot, and then n >= len(classes), so some class has more than one.
        excess = np.where(quota > least, quota - exact, -np.inf)
        quota[int(np.argmax(excess))] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _test_only(name: str, what: str, path: Path, split: str) -> None:
    if split == "train":
        raise DataError(f"{name}: {what} is evaluation data only: {path} is the test split, there is no train split")
    if split != "test":
        raise DataError(f"{name}: unknown split {split!r} for {path}: {what} has only the test split")


# ---------------------------------------------------------------------------------------------- folder


def _image_files(class_dir: Path) -> list[Path]:
    # Hidden files (.DS_Store, ._x.png) and other suffixes (README.txt) are skipped, not errors.
    return sorted((f for f in class_dir.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda f: f.name)


def _scan_folder(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
    if not root.exists():
        raise DataError(f"folder: {root} does not exist (dataset.path)")
    if not root.is_dir():
        raise DataError(f"folder: {root} is not a directory; dataset=folder needs a folder with one subfolder "
                        "per class")
    # Hidden folders (.ipynb_checkpoints, .git) are never classes.
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    if not class_dirs:
        raise DataError(f"folder: {root} has no class subfolders; put each class's images in {root}/<class name>/")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = _image_files(class_dir)
        if not found:
            raise DataError(f"folder: class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    return tuple(d.name for d in class_dirs), files, np.asarray(labels, dtype=np.int64)


def _open(path: Path) -> Image.Image:
    return Image.open(path, formats=_PIL_FORMATS)


def _probe(path: Path) -> tuple[tuple[int, int], bool]:
    """(width, height) and whether the image is grey, from the header only."""
    try:
        with _open(path) as im:
            return im.size, im.mode in _GREY_8BIT + _GREY_16BIT
    except Exception as err:   # Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error ...
        raise DataError(f"folder: cannot read image {path}: {err}") from None


def _decode(path: Path, colour: bool, size: int | None) -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1]: 1 channel if grey, else 3; resized if ``size``."""
    try:
        with _open(path) as im:
            im.load()
            if im.mode in _GREY_16BIT:
                chans = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)[None]
            elif im.mode in _GREY_8BIT:
                chans = np.asarray(im.convert("L"), dtype=np.float32)[None] / 255.0
            else:
                # Alpha is dropped, not composited (as torchvision's ImageFolder does); palette, CMYK -> RGB.
                chans = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except Exception as err:   # a header that parsed can still hide truncated or corrupt pixel data
        raise DataError(f"folder: cannot read image {path}: {err}") from None
    if colour and chans.shape[0] == 1:
        chans = np.repeat(chans, 3, axis=0)   # R = G = B, as Pillow's L -> RGB
    if size is not None and chans.shape[1:] != (size, size):
        # Resized in float ("F" mode), so 16-bit and 8-bit images lose nothing to rounding.
        planes = [Image.fromarray(np.ascontiguousarray(c)).resize((size, size), Image.Resampling.BILINEAR)
                  for c in chans]
        chans = np.stack([np.asarray(p) for p in planes]).clip(0.0, 1.0)
    return chans.astype(np.float32, copy=False)


def load_folder(path: str | Path, split: str = "test", n: int | None = None, size: int | None = None,
                seed: int = 0) -> StreamedSplit:
    """An image folder with one subfolder per class, as the ``test`` split (see the module docstring).

    Classes are the subfolder names, sorted (label = index); files are read in sorted name order, skipping
    hidden files and suffixes other than :data:`IMAGE_SUFFIXES`. Grey images (8- or 16-bit) give 1 channel,
    colour 3; if a folder mixes grey and colour files, all are converted to RGB. Alpha is dropped, palette
    images become RGB, and EXIF orientation is not applied (pixels as stored). All images must share one size
    unless ``size`` is given. Every file's header is checked now; the ``n`` selected images are decoded batch by
    batch when the split is used, in a few threads.
    """
    root = Path(path).expanduser()
    _test_only("folder", "a folder", root, split)
    class_names, files, labels = _scan_folder(root)
    probes = [_probe(f) for f in files]
    colour = not all(grey for _, grey in probes)
    if size is None:
        first = probes[0][0]
        odd = next((i for i, (wh, _) in enumerate(probes) if wh != first), None)
        if odd is not None:
            (w0, h0), (w1, h1) = first, probes[odd][0]
            raise DataError(f"folder: images differ in size: {files[0]} is {w0}x{h0} but {files[odd]} is {w1}x{h1}; "
                            "set dataset.size=S to resize every image to SxS")
    idx = stratified_indices(labels, n, seed)
    width, height = probes[0][0]
    shape = (3 if colour else 1, size or height, size or width)
    return StreamedSplit(torch.from_numpy(labels[idx]), len(class_names), "folder", "test", class_names, shape,
                         _FolderReader(files, colour, size), idx)


class _FolderReader:
    """Decodes the images at given positions of a folder's file list, in a few threads."""

    def __init__(self, files: list[Path], colour: bool, size: int | None) -> None:
        self.files, self.colour, self.size = files, colour, size

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        # Pillow releases the GIL while it decodes, so threads overlap the file reads and the decoding.
        with ThreadPoolExecutor(_DECODE_THREADS) as pool:
            images = list(pool.map(lambda i: _decode(self.files[i], self.colour, self.size), positions.tolist()))
        return torch.from_numpy(np.stack(images))


# ---------------------------------------------------------------------------------------------- npz


def _pickled(key: str, path: Path, detail: str) -> DataError:
    return DataError(f"npz: {path} array {key!r} holds Python objects (pickled data), which are never loaded; "
                     f"save {key} as a plain numeric/string array ({detail})")


def _array(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:   # numpy refuses object arrays when allow_pickle=False
        raise _pickled(key, path, str(err)) from None


def _layout(shape: tuple[int, ...], path: Path) -> str:
    """``"nhw"``, ``"nhwc"`` or ``"nchw"`` for x of ``shape``: the channel axis is the one of size 1 or 3."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise DataError(f"npz: {path} x has shape {shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first and last:
        raise DataError(f"npz: {path} x has shape {shape}, ambiguous: axis 1 and axis 3 both could be the channel "
                        "axis (size 1 or 3); store it as (N, H, W, C) or (N, C, H, W) with H, W not 1 or 3")
    if last:
        return "nhwc"
    if first:
        return "nchw"
    raise DataError(f"npz: {path} x has shape {shape}: neither axis 1 nor axis 3 has size 1 or 3 (the channels)")


def _nchw(x: np.ndarray, layout: str) -> np.ndarray:
    return x[:, None] if layout == "nhw" else x.transpose(0, 3, 1, 2) if layout == "nhwc" else x


def _open_npz(path: Path) -> tuple[NpzRows, np.ndarray, tuple[str, ...]]:
    """x as rows read on demand; y and the class names read whole (they are small)."""
    if not path.exists():
        raise DataError(f"npz: {path} does not exist (dataset.path)")
    if path.is_dir():
        raise DataError(f"npz: {path} is a directory; dataset=npz needs an .npz file (use dataset=folder for a folder)")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:   # zipfile.BadZipFile, OSError, ValueError (a pickle file), EOFError ...
        raise DataError(f"npz: cannot read {path} as an .npz archive ({err})") from None
    if isinstance(archive, np.ndarray):
        raise DataError(f"npz: {path} holds a single .npy array; save an .npz with arrays x and y (np.savez)")
    with archive:
        for key in ("x", "y"):
            if key not in archive.files:
                held = ", ".join(archive.files) or "nothing"
                raise DataError(f"npz: {path} has no array {key!r} (it holds: {held}); "
                                "save the images as x and the labels as y")
        y = _array(archive, "y", path)
        names = _array(archive, "class_names", path) if "class_names" in archive.files else None
    try:
        x = NpzRows(path, "x")
    except Exception as err:   # a truncated member or a header numpy cannot parse
        raise DataError(f"npz: cannot read array 'x' of {path} ({err})") from None
    if x.dtype.hasobject:
        raise _pickled("x", path, f"dtype {x.dtype}")
    if names is not None:
        if names.ndim != 1 or names.size == 0 or names.dtype.kind not in "US":
            raise DataError(f"npz: {path} class_names must be a non-empty 1-D array of strings, "
                            f"got dtype {names.dtype} shape {names.shape}")
        class_names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in names.tolist())
    else:
        class_names = ()
    return x, y, class_names


def _check_labels(y: np.ndarray, n_images: int, class_names: tuple[str, ...], path: Path) -> int:
    """The number of classes, after checking ``y`` against ``x`` and ``class_names``."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"npz: {path} y must be a 1-D array of integer labels, got dtype {y.dtype} shape {y.shape}")
    if len(y) != n_images:
        raise DataError(f"npz: {path} has {n_images} images in x but {len(y)} labels in y")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DataError(f"npz: {path} y has negative label {lo}; labels must be 0..K-1")
    if class_names and hi >= len(class_names):
        raise DataError(f"npz: {path} y has label {hi} but class_names lists {len(class_names)} classes; "
                        f"labels must be 0..{len(class_names) - 1}")
    return len(class_names) or hi + 1


def _check_float_range(x: NpzRows, path: Path) -> None:
    """Float images must lie in [0, 1]: checked over the whole array, a bounded chunk at a time."""
    for chunk in x.chunks(max(1, (64 << 20) // max(x.dtype.itemsize * int(np.prod(x.shape[1:])), 1))):
        rows = x.rows(np.arange(chunk.start, chunk.stop))
        lo, hi = float(rows.min()), float(rows.max())
        if not (lo >= 0.0 and hi <= 1.0):   # also catches NaN
            raise DataError(f"npz: {path} x is {x.dtype} with values in [{lo:g}, {hi:g}] (rows {chunk.start}.."
                            f"{chunk.stop - 1}); float images must lie in [0, 1] (or save uint8 in [0, 255])")


class _NpzReader:
    """Reads rows of x, as float32 NCHW images in [0, 1], resized if asked."""

    def __init__(self, x: NpzRows, layout: str, size: int | None) -> None:
        self.x, self.layout, self.size = x, layout, size

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(np.ascontiguousarray(_nchw(self.x.rows(positions), self.layout)))
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return _resize(images, self.size)


def load_npz(path: str | Path, split: str = "test", n: int | None = None, size: int | None = None,
             seed: int = 0) -> StreamedSplit:
    """Arrays ``x``, ``y`` (and optional ``class_names``) of an ``.npz`` file as the ``test`` split.

    ``x`` is uint8 in [0, 255] or float in [0, 1], shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with
    C in {1, 3}: the layout is NHWC if only axis 3 has size 1 or 3, NCHW if only axis 1 does; a shape where
    both or neither do is an error. ``y`` holds integer labels 0..K-1 with K = len(class_names) if given,
    else max(y) + 1. The file is read with ``allow_pickle=False``: object arrays are refused, never unpickled.
    The images are read batch by batch when the split is used (see :mod:`robustbench_local.npz_rows`).
    """
    file = Path(path).expanduser()
    _test_only("npz", "an npz file", file, split)
    x, y, class_names = _open_npz(file)
    if x.shape[:1] == (0,) or len(x.shape) == 0:
        raise DataError(f"npz: {file} x holds no images (shape {x.shape})")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataError(f"npz: {file} x has dtype {x.dtype}; use uint8 in [0, 255] or float in [0, 1]")
    layout = _layout(tuple(x.shape), file)
    num_classes = _check_labels(y, len(x), class_names, file)
    if x.dtype.kind == "f":
        _check_float_range(x, file)
    c, h, w = _nchw(np.empty((1, *x.shape[1:]), dtype=np.uint8), layout).shape[1:]
    idx = stratified_indices(y, n, seed)
    return StreamedSplit(torch.from_numpy(y[idx].astype(np.int64)), num_classes, "npz", "test",
                         class_names or tuple(str(i) for i in range(num_classes)),
                         (c, size or h, size or w), _NpzReader(x, layout, size), idx)


_READERS = {"folder": load_folder, "npz": load_npz}


def load_user_dataset(name: str, path: str | Path | None, split: str = "test", n: int | None = None,
                      size: int | None = None, seed: int = 0) -> StreamedSplit:
    """``dataset=folder`` or ``dataset=npz`` read from ``path`` (``dataset.path``)."""
    if name not in _READERS:
        raise DataError(f"unknown user dataset {name!r}: choose one of {', '.join(USER_DATASETS)}")
    if path is None or str(path) == "":
        what = "DIR (a folder with one subfolder of images per class)" if name == "folder" else "FILE.npz"
        raise DataError(f"dataset.path is required for dataset={name}: give dataset.path={what}")
    return _READERS[name](path, split, n=n, size=size, seed=seed)


def data_identity(path: str | Path) -> str:
    """SHA-256 of a user data set's content: the .npz file, or every file of a folder with its relative path."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist (dataset.path)")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as stream:   # in chunks: a data set may be larger than memory
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
