"""The user's own data: image folders and .npz files, built from real MNIST / CIFAR-10 test images."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, features

from robustbench_local.api import compose_config
from robustbench_local.config_schema import validate
from robustbench_local.data import DATASETS, DataError, load_dataset
from robustbench_local.data_user import stratified_indices
from robustbench_local.errors import ConfigError

N = 30


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_dataset("mnist", "test", root=data_root, n=N)


@pytest.fixture(scope="module")
def cifar(data_root):
    return load_dataset("cifar10", "test", root=data_root, n=N)


def _uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """One (C, H, W) image in [0, 1] as the uint8 (H, W) or (H, W, C) array Pillow saves."""
    a = (x * 255).round().byte().permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def _write_folder(root: Path, data, fmt: str = "PNG", suffix: str = ".png", **save) -> list[tuple[str, int]]:
    """Save ``data`` as root/<class name>/<index>.<suffix>; returns (class name, source index) in reading order."""
    # Names chosen so that their sorted order differs from the label order.
    names = [f"c{9 - int(label)}_{data.class_names[int(label)]}" for label in data.y]
    for i, (name, img) in enumerate(zip(names, data.x)):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_uint8_hwc(img)).save(root / name / f"{i:03d}{suffix}", fmt, **save)
    return sorted(zip(names, range(len(names))))


def _expected(order: list[tuple[str, int]]) -> tuple[list[int], tuple[str, ...]]:
    classes = tuple(sorted({name for name, _ in order}))
    return [classes.index(name) for name, _ in order], classes


# ---------------------------------------------------------------------------------------------- folder


def test_folder_png_round_trip_is_exact_for_grey_and_colour(tmp_path, mnist, cifar):
    for source, channels in ((mnist, 1), (cifar, 3)):
        root = tmp_path / source.name
        order = _write_folder(root, source)
        data = load_dataset("folder", "test", path=root)
        labels, classes = _expected(order)
        assert (data.name, data.split, data.class_names, data.num_classes) == ("folder", "test", classes, len(classes))
        assert data.y.dtype == torch.int64 and data.y.tolist() == labels
        assert data.x.dtype == torch.float32 and data.input_shape == (channels, *source.input_shape[1:])
        assert torch.equal(data.x, source.x[[i for _, i in order]])   # uint8 -> PNG -> uint8: exact
        assert torch.equal(load_dataset("folder", path=str(root)).x, data.x)   # deterministic


def test_folder_jpeg_is_close(tmp_path, cifar):
    order = _write_folder(tmp_path, cifar, "JPEG", ".jpg", quality=95)
    data = load_dataset("folder", path=tmp_path)
    err = (data.x - cifar.x[[i for _, i in order]]).abs()
    assert data.input_shape == (3, 32, 32) and data.y.tolist() == _expected(order)[0]
    assert float(err.mean()) < 0.03 and float(err.max()) < 0.4


def test_folder_reads_bmp_and_webp_and_skips_other_files(tmp_path, cifar):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(_uint8_hwc(cifar.x[0])).save(tmp_path / "a" / "x.bmp")
    # Lossless WebP where Pillow was built with it, so the pixels still compare exactly.
    if features.check("webp"):
        Image.fromarray(_uint8_hwc(cifar.x[1])).save(tmp_path / "b" / "y.webp", lossless=True)
    else:
        Image.fromarray(_uint8_hwc(cifar.x[1])).save(tmp_path / "b" / "y.png")
    (tmp_path / "a" / "README.txt").write_text("not an image")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / ".ipynb_checkpoints").mkdir()   # hidden folders are never classes
    (tmp_path / "notes.txt").write_text("files beside the class folders are ignored")
    data = load_dataset("folder", path=tmp_path)
    assert data.class_names == ("a", "b") and data.y.tolist() == [0, 1]
    assert torch.equal(data.x, cifar.x[:2])


def test_folder_mixed_grey_and_colour_becomes_rgb(tmp_path, cifar):
    colour = _uint8_hwc(cifar.x[0])
    grey = np.asarray(Image.fromarray(_uint8_hwc(cifar.x[1])).convert("L"))
    rgba = np.dstack([_uint8_hwc(cifar.x[2]), np.full((32, 32), 77, np.uint8)])
    palette = Image.fromarray(_uint8_hwc(cifar.x[3])).convert("P")
    for cls, name, img in (("a", "0.png", Image.fromarray(colour)), ("a", "1.png", Image.fromarray(grey)),
                           ("b", "2.png", Image.fromarray(rgba)), ("b", "3.png", palette)):
        (tmp_path / cls).mkdir(exist_ok=True)
        img.save(tmp_path / cls / name)
    data = load_dataset("folder", path=tmp_path)
    assert data.input_shape == (3, 32, 32)
    assert torch.equal(data.x[0], cifar.x[0])
    assert all(torch.equal(data.x[1, c], torch.from_numpy(grey / np.float32(255))) for c in range(3))   # R = G = B
    assert torch.equal(data.x[2], cifar.x[2])   # alpha dropped
    expected = torch.from_numpy(np.asarray(palette.convert("RGB"), np.float32).transpose(2, 0, 1) / 255)
    assert torch.equal(data.x[3], expected)


def test_folder_16bit_grey(tmp_path):
    (tmp_path / "k").mkdir()
    a = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "k" / "deep.png")
    data = load_dataset("folder", path=tmp_path)
    assert data.input_shape == (1, 8, 8)
    assert torch.allclose(data.x[0, 0], torch.from_numpy(a / np.float32(65535)))


def test_folder_size_resizes_mixed_sizes_bilinear_antialiased(tmp_path, mnist, cifar):
    for cls, img in (("grey", mnist.x[0]), ("colour", cifar.x[0])):
        (tmp_path / cls).mkdir()
        Image.fromarray(_uint8_hwc(img)).save(tmp_path / cls / "0.png")
    data = load_dataset("folder", path=tmp_path, size=16)
    assert data.input_shape == (3, 16, 16) and data.class_names == ("colour", "grey")
    # Pillow's BILINEAR in float equals torch's antialiased bilinear.
    want = torch.cat([F.interpolate(img.expand(3, -1, -1)[None], size=(16, 16), mode="bilinear", antialias=True,
                                    align_corners=False) for img in (cifar.x[0], mnist.x[0])])
    assert torch.allclose(data.x, want, atol=1e-5)


def test_folder_n_test_is_stratified_and_seeded(tmp_path, mnist):
    order = _write_folder(tmp_path, mnist)
    full = load_dataset("folder", path=tmp_path)
    sub = load_dataset("folder", path=tmp_path, n=12, seed=5)
    assert len(sub) == 12 and set(sub.y.tolist()) == set(range(full.num_classes))   # 10 classes, all present
    assert sub.num_classes == full.num_classes and sub.class_names == full.class_names
    assert torch.equal(load_dataset("folder", path=tmp_path, n=12, seed=5).x, sub.x)
    assert not torch.equal(load_dataset("folder", path=tmp_path, n=12, seed=6).x, sub.x)
    idx = stratified_indices(full.y, 12, seed=5)
    assert torch.equal(sub.x, full.x[idx]) and torch.equal(sub.y, full.y[idx])   # a subset, in folder order
    assert len(load_dataset("folder", path=tmp_path, n=1000)) == len(order)


# ---------------------------------------------------------------------------------------------- stratified


def test_stratified_counts_follow_class_frequency():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 9 + [3] * 1)
    idx = stratified_indices(labels, 20, seed=0)
    assert np.bincount(labels[idx], minlength=4).tolist() == [12, 6, 1, 1]   # 3 has 0.2 -> at least one
    assert np.all(np.diff(idx) > 0)                                          # sorted, no repeats
    assert np.array_equal(stratified_indices(labels, 20, seed=0), idx)
    assert not np.array_equal(stratified_indices(labels, 20, seed=1), idx)
    assert np.array_equal(stratified_indices(labels, 100), np.arange(100))
    assert np.array_equal(stratified_indices(labels, None), np.arange(100))
    assert np.bincount(labels[stratified_indices(labels, 2)], minlength=4).tolist() == [1, 1, 0, 0]   # n < classes
    assert np.bincount(labels[stratified_indices(labels, 4)], minlength=4).tolist() == [1, 1, 1, 1]


def test_stratified_on_real_labels(mnist, data_root):
    y = load_dataset("mnist", "test", root=data_root, n=500).y.numpy()
    counts = np.bincount(y, minlength=10)
    for n in (10, 37, 123):
        got = np.bincount(y[stratified_indices(y, n, seed=3)], minlength=10)
        assert got.sum() == n and got.min() >= 1
        assert np.all(np.abs(got - n * counts / len(y)) < 1.5)


# ---------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("source_name, layout", [("mnist", "NHW"), ("mnist", "NCHW"), ("mnist", "NHWC"),
                                                  ("cifar", "NCHW"), ("cifar", "NHWC")])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_round_trip(tmp_path, request, source_name, layout, dtype):
    source = request.getfixturevalue(source_name)
    x = source.x.numpy()
    x = (x * 255).round().astype(np.uint8) if dtype == "uint8" else x
    x = {"NCHW": x, "NHWC": x.transpose(0, 2, 3, 1), "NHW": x[:, 0]}[layout]
    file = tmp_path / "data.npz"
    np.savez(file, x=x, y=source.y.numpy(), class_names=np.array(source.class_names))
    data = load_dataset("npz", path=file)
    assert (data.name, data.split, data.class_names, data.num_classes) == ("npz", "test", source.class_names, 10)
    assert torch.equal(data.x, source.x) and torch.equal(data.y, source.y)


def test_npz_without_class_names_counts_classes_from_labels(tmp_path, cifar):
    file = tmp_path / "d.npz"
    y = np.minimum(cifar.y.numpy(), 6).astype(np.uint8)
    np.savez(file, x=cifar.x.numpy(), y=y)
    data = load_dataset("npz", path=file)
    assert data.num_classes == 7 and data.class_names == tuple(str(i) for i in range(7))
    assert data.y.dtype == torch.int64 and data.y.tolist() == y.tolist()


def test_npz_n_test_and_size(tmp_path, cifar):
    file = tmp_path / "d.npz"
    np.savez(file, x=cifar.x.numpy(), y=cifar.y.numpy())
    sub = load_dataset("npz", path=file, n=12, seed=2, size=16)
    idx = stratified_indices(cifar.y, 12, seed=2)
    assert sub.input_shape == (3, 16, 16) and torch.equal(sub.y, cifar.y[idx])
    want = F.interpolate(cifar.x[idx], size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(sub.x, want, atol=1e-6)
    assert torch.equal(load_dataset("npz", path=file, n=12, seed=2, size=16).x, sub.x)


# ---------------------------------------------------------------------------------------------- errors


def _raises(match: str, *args, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        load_dataset(*args, **kwargs)
    message = str(err.value)
    assert match in message and "\n" not in message, message
    return message


def _class_dir(root: Path, name: str, images: list[np.ndarray]) -> Path:
    (root / name).mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / name / f"{i}.png")
    return root / name


def test_folder_errors(tmp_path, mnist, cifar):
    grey = [_uint8_hwc(x) for x in mnist.x[:2]]
    _raises("dataset.path is required for dataset=folder", "folder")
    _raises("dataset.path is required for dataset=folder", "folder", path="")
    _raises(str(tmp_path / "nope"), "folder", path=tmp_path / "nope")

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(grey[0]).save(flat / "0.png")
    assert "no class subfolders" in _raises(str(flat), "folder", path=flat)

    empty = tmp_path / "empty"
    _class_dir(empty, "full", grey)
    (empty / "hollow").mkdir()
    (empty / "hollow" / "notes.txt").write_text("no image here")
    assert "holds no images" in _raises(str(empty / "hollow"), "folder", path=empty)

    corrupt = tmp_path / "corrupt"
    _class_dir(corrupt, "a", grey)
    (corrupt / "a" / "bad.png").write_bytes(b"this is not a png")
    assert "cannot read image" in _raises(str(corrupt / "a" / "bad.png"), "folder", path=corrupt)

    truncated = tmp_path / "truncated"
    _class_dir(truncated, "a", grey)
    buf = io.BytesIO()
    Image.fromarray(_uint8_hwc(cifar.x[0])).save(buf, "PNG")
    (truncated / "a" / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _raises(str(truncated / "a" / "cut.png"), "folder", path=truncated)

    mixed = tmp_path / "mixed"
    _class_dir(mixed, "a", grey)
    _class_dir(mixed, "b", [_uint8_hwc(cifar.x[0])])
    message = _raises("dataset.size", "folder", path=mixed)
    assert "differ in size" in message
    assert str(mixed / "a" / "0.png") in message and str(mixed / "b" / "0.png") in message
    assert load_dataset("folder", path=mixed, size=28).input_shape == (3, 28, 28)

    _raises("evaluation data only", "folder", "train", path=mixed, size=28)
    _raises("only the test split", "folder", "test_full", path=mixed, size=28)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


class _Marker:
    """Unpickling this creates a folder: the proof that an object array was never unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_npz_errors(tmp_path, cifar):
    x, y = cifar.x.numpy(), cifar.y.numpy()
    _raises("dataset.path is required for dataset=npz", "npz")
    _raises(str(tmp_path / "nope.npz"), "npz", path=tmp_path / "nope.npz")
    _raises("'x'", "npz", path=_npz(tmp_path / "no_x.npz", images=x, y=y))
    assert str(tmp_path / "no_y.npz") in _raises("'y'", "npz", path=_npz(tmp_path / "no_y.npz", x=x))

    marker = tmp_path / "unpickled"
    objects = np.empty(N, dtype=object)
    objects[:] = [_Marker(marker) for _ in range(N)]
    for key, arrays in (("'x'", {"x": objects, "y": y}), ("'y'", {"x": x, "y": objects}),
                        ("'class_names'", {"x": x, "y": y, "class_names": objects})):
        file = _npz(tmp_path / f"pickle_{key.strip(chr(39))}.npz", **arrays)
        message = _raises(str(file), "npz", path=file)
        assert "pickled" in message and key in message
    assert not marker.exists()

    _raises("30 images in x but 29 labels in y", "npz", path=_npz(tmp_path / "short.npz", x=x, y=y[:-1]))
    neg = y.copy()
    neg[4] = -1
    assert "negative label -1" in _raises(str(tmp_path / "neg.npz"), "npz", path=_npz(tmp_path / "neg.npz", x=x, y=neg))
    message = _raises(str(tmp_path / "range.npz"), "npz",
                      path=_npz(tmp_path / "range.npz", x=x, y=y, class_names=np.array(["a", "b", "c"])))
    assert "class_names lists 3 classes" in message
    _raises("y must be a 1-D array of integer labels", "npz", path=_npz(tmp_path / "fy.npz", x=x, y=y.astype(float)))

    for name, bad in (("big", x * 1.5), ("small", x - 0.5), ("nan", np.where(x > 0.5, np.nan, x))):
        file = _npz(tmp_path / f"{name}.npz", x=bad.astype(np.float32), y=y)
        assert "must lie in [0, 1]" in _raises(str(file), "npz", path=file)

    _raises("dtype int64", "npz", path=_npz(tmp_path / "int.npz", x=(x * 255).astype(np.int64), y=y))
    _raises("ambiguous", "npz", path=_npz(tmp_path / "amb.npz", x=np.zeros((4, 3, 8, 3), np.uint8), y=np.arange(4)))
    _raises("neither axis", "npz", path=_npz(tmp_path / "noc.npz", x=np.zeros((4, 5, 8, 8), np.uint8), y=np.arange(4)))
    np.save(tmp_path / "one.npy", x)
    _raises("single .npy array", "npz", path=tmp_path / "one.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    _raises(str(tmp_path / "junk.npz"), "npz", path=tmp_path / "junk.npz")
    _raises("evaluation data only", "npz", "train", path=tmp_path / "neg.npz")


def test_builtin_sets_refuse_a_path_and_keep_first_n(tmp_path, data_root):
    assert {"folder", "npz"} <= set(DATASETS)
    _raises("dataset.path is read only by dataset=folder / dataset=npz", "digits", path=tmp_path)
    first = load_dataset("mnist", "test", root=data_root, n=5, seed=9)   # seed does not touch the built-in sets
    assert torch.equal(first.x, load_dataset("mnist", "test", root=data_root).x[:5])


# ---------------------------------------------------------------------------------------------- config


def test_config_folder_and_npz_need_a_path(tmp_path, mnist):
    _write_folder(tmp_path, mnist)
    cfg = compose_config("dataset=folder", f"dataset.path={tmp_path}")
    validate(cfg)
    assert cfg.dataset.name == "folder" and cfg.dataset.path == str(tmp_path)
    data = load_dataset(cfg.dataset.name, path=cfg.dataset.path, n=cfg.dataset.n_test, size=cfg.dataset.size)
    assert len(data) == N
    validate(compose_config("dataset=npz", "dataset.path=x.npz", "dataset.n_test=10", "dataset.size=16"))
    for name in ("folder", "npz"):
        with pytest.raises(ConfigError, match=rf"^dataset\.path is required for dataset={name}"):
            validate(compose_config(f"dataset={name}"))
    with pytest.raises(ConfigError, match=r"^dataset\.path is read only by"):
        validate(compose_config("dataset=mnist", f"dataset.path={tmp_path}"))
