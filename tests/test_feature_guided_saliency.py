"""SIFT features of the feature-guided attack: upscaled keypoints, saliency distribution, Gaussian partition."""
from __future__ import annotations

import numpy as np
import pytest

from attacks.feature_guided.saliency import extract_features, gaussian_partition, sift_keypoints
from robustbench_local.data import load_dataset


@pytest.fixture(scope="module")
def mnist_images() -> np.ndarray:
    """The first 10 MNIST test-split images as (N, 1, 28, 28) float arrays."""
    return load_dataset("mnist", "test", n=10).x.numpy()


def test_upscaling_finds_keypoints_inside_the_original_image(mnist_images):
    counts_big, counts_raw, near = [], [], []
    for img in mnist_images:
        kps = sift_keypoints(img, upscale=15)
        counts_big.append(len(kps))
        counts_raw.append(len(sift_keypoints(img, upscale=1)))
        for k in kps:
            assert -0.5 <= k.row <= 27.5 and -0.5 <= k.col <= 27.5, "keypoints must map back to 28x28 coordinates"
            assert k.sigma > 0 and k.response > 0
        # SIFT blobs describe the digit: keypoints lie on or right beside its strokes
        ink = np.argwhere(img[0] > 0.3)
        near += [float(np.min(np.hypot(ink[:, 0] - k.row, ink[:, 1] - k.col))) <= 3.0 for k in kps]
    assert min(counts_big) >= 3, counts_big
    assert np.mean(near) >= 0.9, "keypoints should sit within 3 pixels of the digit's ink"
    # the pitfall: SIFT on raw 28x28 digits finds far fewer features
    assert sum(counts_raw) < sum(counts_big) / 2, (counts_raw, counts_big)


def test_saliency_and_partition_follow_the_keypoint_gaussians(mnist_images):
    fm = extract_features(mnist_images[0])
    k = fm.num_features
    assert np.isclose(fm.saliency.sum(), 1.0)
    resp = np.array([kp.response for kp in fm.keypoints])
    assert np.allclose(fm.saliency, resp / resp.sum())
    assert fm.partition.shape == (28, 28) and fm.partition.min() == 0 and fm.partition.max() == k - 1
    assert sorted(np.unique(fm.partition).tolist()) == list(range(k)), "every feature owns at least one pixel"
    # brute force: each pixel belongs to the keypoint whose 2-D Gaussian pdf is highest there
    for r, c in [(0, 0), (5, 20), (14, 14), (27, 3), (20, 25)]:
        pdf = [np.exp(-((r - kp.row) ** 2 + (c - kp.col) ** 2) / (2 * kp.sigma ** 2)) / (2 * np.pi * kp.sigma ** 2)
               for kp in fm.keypoints]
        assert fm.partition[r, c] == int(np.argmax(pdf))
        assert np.isclose(fm.pixel_weight[r, c], max(pdf))


def test_colour_images_blank_images_and_bad_input():
    gtsrb = load_dataset("gtsrb", "test", n=2).x.numpy()
    fm = extract_features(gtsrb[0])
    assert fm.num_features >= 1 and fm.partition.shape == (32, 32)
    blank = extract_features(np.zeros((1, 28, 28), dtype=np.float32))
    assert blank.num_features == 1 and (blank.partition == 0).all(), "no SIFT keypoint -> one feature covering all"
    with pytest.raises(ValueError, match="shape"):
        sift_keypoints(np.zeros((28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sift_keypoints(np.full((1, 28, 28), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="at least one keypoint"):
        gaussian_partition([], 4, 4)
