"""CUDA generator: kernels, per-image normalisation, mix, determinism, grouped conv, bad input, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attacks.unlearnable.unlearnable as cu
from attacks.unlearnable.dataset_io import load_poisoned, poison_split, save_poisoned
from attacks.unlearnable.unlearnable import CudaConfig, class_kernels, convolve_by_class, poison_images
from robustbench_local.data import load_dataset


@pytest.fixture(scope="module")
def cifar_small():
    return load_dataset("cifar10", "train", n=300)


def test_kernels_follow_the_paper():
    k = class_kernels(10, kernel_size=3, blur=0.3, key=7)
    assert k.shape == (10, 3, 3) and k.dtype == torch.float32
    flat = k.flatten(1)
    # exactly one tap per class is 1; all others are U(0, blur) draws
    assert torch.equal((flat == 1.0).sum(1), torch.ones(10, dtype=torch.long))
    others = flat[flat != 1.0]
    assert float(others.min()) >= 0.0 and float(others.max()) < 0.3
    assert float(others.std()) > 0.05  # really random, not constant
    # the kernels differ between classes, and the one-tap position varies
    assert len({tuple(r.tolist()) for r in flat}) == 10
    assert len(set(flat.argmax(1).tolist())) > 1
    big = class_kernels(4, kernel_size=5, blur=1.0, key=1)
    assert big.shape == (4, 5, 5) and float(big.max()) == 1.0


def test_kernels_are_deterministic_by_key_and_same_control():
    assert torch.equal(class_kernels(10, key=3), class_kernels(10, key=3))
    assert not torch.equal(class_kernels(10, key=3), class_kernels(10, key=4))
    same = class_kernels(10, key=3, same=True)
    assert all(torch.equal(same[0], same[c]) for c in range(10))


def test_grouped_conv_matches_per_image_reference_in_one_call(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(37, 3, 12, 12, generator=gen)
    y = torch.randint(0, 5, (37,), generator=gen)
    kernels = class_kernels(5, kernel_size=5, blur=0.6, key=2)
    calls = []
    real_conv = F.conv2d
    monkeypatch.setattr(cu.F, "conv2d", lambda *a, **kw: calls.append(1) or real_conv(*a, **kw))
    out = convolve_by_class(x, y, kernels)
    assert len(calls) == 1  # vectorised: one grouped conv for the whole batch, no per-image loop
    monkeypatch.undo()
    for i in range(37):  # reference: image i, kernel of its class, same kernel on each channel
        w = kernels[y[i]].expand(3, 1, 5, 5)
        ref = F.conv2d(x[i:i + 1], w, padding=2, groups=3)
        torch.testing.assert_close(out[i:i + 1], ref, rtol=1e-5, atol=1e-5)


def test_poison_normalises_each_image_by_its_max_and_stores_uint8(cifar_small):
    p = poison_images(cifar_small.x, cifar_small.y, 10, CudaConfig(key=5))
    assert p.x.dtype == torch.uint8 and p.x.shape == cifar_small.x.shape
    assert bool(p.poisoned.all())
    # division by the image's global maximum: every poisoned image peaks at exactly 255
    assert torch.equal(p.x.flatten(1).amax(1), torch.full((300,), 255, dtype=torch.uint8))
    i = 17  # the formula, by hand, for one image
    xi = (cifar_small.x[i] * 255).round()
    conv = F.conv2d(xi[None], p.kernels[cifar_small.y[i]].expand(3, 1, 3, 3), padding=1, groups=3)
    expected = (conv / conv.max() * 255).clamp(0, 255).to(torch.uint8)[0]
    assert (p.x[i].int() - expected.int()).abs().max() <= 1
    # blurred, yet still the same picture (the tap set to 1 keeps it recognisable)
    a, b = cifar_small.x.flatten(1), p.as_float().flatten(1)
    corr = ((a - a.mean(1, keepdim=True)) * (b - b.mean(1, keepdim=True))).sum(1) / (
        (a - a.mean(1, keepdim=True)).norm(dim=1) * (b - b.mean(1, keepdim=True)).norm(dim=1))
    assert float(corr.median()) > 0.8
    assert float((a - b).abs().mean()) > 0.02  # ... but really changed


def test_uint8_and_float_inputs_agree_and_key_is_deterministic(cifar_small):
    u8 = (cifar_small.x * 255).round().to(torch.uint8)
    a = poison_images(u8, cifar_small.y, 10, CudaConfig(key=9))
    b = poison_images(cifar_small.x, cifar_small.y, 10, CudaConfig(key=9))
    c = poison_images(cifar_small.x, cifar_small.y, 10, CudaConfig(key=10))
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, c.x)


def test_mix_poisons_exactly_that_fraction_and_leaves_the_rest_clean(cifar_small):
    u8 = (cifar_small.x * 255).round().to(torch.uint8)
    masks = {}
    for mix in (0.0, 0.25, 0.5, 1.0):
        p = poison_images(cifar_small.x, cifar_small.y, 10, CudaConfig(mix=mix, key=1))
        assert int(p.poisoned.sum()) == round(mix * 300)
        assert torch.equal(p.x[~p.poisoned], u8[~p.poisoned])
        changed = (p.x[p.poisoned] != u8[p.poisoned]).flatten(1).any(1)
        assert bool(changed.all())
        masks[mix] = p.poisoned
    # same key: a larger mix poisons a superset, and the kernels do not depend on mix
    assert bool((masks[0.25] <= masks[0.5]).all() and (masks[0.5] <= masks[1.0]).all())


def test_grey_images_are_supported():
    mnist = load_dataset("mnist", "train", n=64)
    p = poison_images(mnist.x, mnist.y, 10, CudaConfig(blur=0.5))
    assert p.x.shape == (64, 1, 28, 28) and p.x.dtype == torch.uint8
    assert torch.equal(p.x.flatten(1).amax(1), torch.full((64,), 255, dtype=torch.uint8))


@pytest.mark.parametrize("kernel_size", [2, 4, 0, 1, -3, 3.0, "3", True])
def test_bad_kernel_size_is_rejected(kernel_size):
    with pytest.raises(ValueError, match="kernel_size"):
        CudaConfig(kernel_size=kernel_size)
    with pytest.raises(ValueError, match="kernel_size"):
        class_kernels(10, kernel_size=kernel_size)


@pytest.mark.parametrize("blur", [0.0, -0.1, 1.01, 2, float("nan")])
def test_blur_outside_zero_one_is_rejected(blur):
    with pytest.raises(ValueError, match=r"blur parameter must lie in \(0, 1\]"):
        CudaConfig(blur=blur)
    with pytest.raises(ValueError, match="blur"):
        class_kernels(10, blur=blur)


def test_labels_out_of_range_and_other_bad_input_are_rejected():
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        poison_images(x, torch.tensor([0, 1, 10, 2]), 10)
    with pytest.raises(ValueError, match="labels must lie"):
        poison_images(x, torch.tensor([0, -1, 1, 2]), 10)
    with pytest.raises(ValueError, match="labels must have shape"):
        poison_images(x, torch.tensor([0, 1]), 10)
    with pytest.raises(ValueError, match="integers"):
        poison_images(x, torch.zeros(4), 10)
    with pytest.raises(ValueError, match="larger than the images"):
        poison_images(x, torch.zeros(4, dtype=torch.long), 10, CudaConfig(kernel_size=9))
    with pytest.raises(ValueError, match="channels"):
        poison_images(torch.rand(4, 2, 8, 8), torch.zeros(4, dtype=torch.long), 10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        poison_images(x * 3, torch.zeros(4, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="mix"):
        CudaConfig(mix=1.5)


def test_save_load_round_trip_without_pickle(tmp_path, cifar_small):
    data = poison_split(cifar_small, CudaConfig(mix=0.5, key=4, blur=0.4))
    path = save_poisoned(tmp_path / "cuda_cifar", data)
    assert path.suffix == ".npz"
    back = load_poisoned(path)
    assert torch.equal(back.images.x, data.images.x) and back.images.x.dtype == torch.uint8
    assert torch.equal(back.images.y, data.images.y)
    assert torch.equal(back.images.poisoned, data.images.poisoned)
    assert torch.equal(back.images.kernels, data.images.kernels)
    assert back.images.config == data.images.config
    assert back.class_names == cifar_small.class_names and back.name == "cifar10"
    split = back.to_split()
    assert split.x.dtype == torch.float32 and float(split.x.max()) <= 1.0 and len(split) == 300
    # the file is plain arrays: it loads with pickling disabled
    with np.load(path, allow_pickle=False) as npz:
        assert npz["x"].dtype == np.uint8


def test_load_rejects_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_poisoned(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="missing arrays"):
        load_poisoned(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        load_poisoned(tmp_path / "junk.npz")


def test_fused_poison_path_matches_the_readable_formula(cifar_small):
    """poison_images fuses max-normalisation and quantisation; it must agree with the plain formula."""
    p = poison_images(cifar_small.x, cifar_small.y, 10, CudaConfig(key=3, kernel_size=5, blur=0.7))
    u8 = (cifar_small.x * 255).round().to(torch.uint8)
    ref = cu.quantise_uint8(cu.normalise_by_max(convolve_by_class(u8, cifar_small.y, p.kernels)))
    diff = (p.x.int() - ref.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
    assert torch.equal(p.x.flatten(1).amax(1), ref.flatten(1).amax(1))
