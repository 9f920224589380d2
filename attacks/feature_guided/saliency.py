"""SIFT features for the feature-guided attack: keypoints, saliency distribution, Gaussian pixel partition.

Wicker, Huang, Kwiatkowska (TACAS 2018), section 3: every SIFT keypoint lambda_i (location mu_i, scale s_i,
response r_i) is a feature; P(lambda_i) = r_i / sum_j r_j; pixels belong to a keypoint through the Gaussian
N(mu_i, sigma_i^2 I). As in DeepGame's black-box pattern, each pixel goes to the keypoint whose Gaussian pdf is
highest there, which partitions the image (without DeepGame's ``key_points[i-1]`` / ``maxk = i`` off-by-one).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Keypoint:
    """A SIFT keypoint in original pixel coordinates (row, col), with Gaussian width ``sigma`` in pixels."""

    row: float
    col: float
    sigma: float
    response: float


@dataclass(frozen=True)
class FeatureMap:
    """Features of one image: keypoints, their saliency, the pixel partition and in-feature pixel weights."""

    keypoints: tuple[Keypoint, ...]
    saliency: np.ndarray  # (K,) float64, sums to 1: P(feature k)
    partition: np.ndarray  # (H, W) int64 in [0, K): the feature each pixel belongs to
    pixel_weight: np.ndarray  # (H, W) float64: the owning keypoint's Gaussian pdf at the pixel

    @property
    def num_features(self) -> int:
        """Number of features (keypoints that own at least one pixel)."""
        return len(self.keypoints)

    def pixels(self, k: int) -> np.ndarray:
        """Flat pixel indices (row * W + col) of feature ``k``."""
        return np.flatnonzero(self.partition.ravel() == k)


def _to_uint8_gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W) uint8 grey image for OpenCV."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one image of shape (C, H, W) with C in (1, 3), got shape {image.shape}")
    if image.min() < 0.0 or image.max() > 1.0:
        raise ValueError(f"image values must lie in [0, 1], got range [{image.min():.3g}, {image.max():.3g}]")
    hwc = np.ascontiguousarray(np.transpose(image, (1, 2, 0)))
    u8 = np.round(hwc * 255.0).astype(np.uint8)
    if u8.shape[2] == 3:
        return cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)
    return u8[:, :, 0]


def sift_keypoints(image: np.ndarray, upscale: int = 15, sigma_constant: float = 15.0,
                   max_keypoints: int | None = None) -> list[Keypoint]:
    """SIFT keypoints of a (C, H, W) image in [0, 1], detected on the ``upscale``-times enlarged image.

    SIFT finds few or no keypoints on 28x28 inputs, so (as SafeCV's ``inflation_constant``) the image is enlarged
    first and the keypoints are mapped back to original pixel coordinates. The Gaussian width follows SafeCV:
    sigma = (keypoint size + sigma_constant) in enlarged pixels, divided by ``upscale``. Keypoints that SIFT
    reports several times at one location (one per orientation) are merged, keeping the largest response.
    """
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1, got {upscale}")
    gray = _to_uint8_gray(image)
    h, w = gray.shape
    big = cv2.resize(gray, (w * upscale, h * upscale), interpolation=cv2.INTER_LINEAR) if upscale > 1 else gray
    found = cv2.SIFT_create().detect(big, None)
    merged: dict[tuple[int, int], Keypoint] = {}
    for kp in found:
        # cv2 points are (x, y) in enlarged pixel units whose centres sit at i + 0.5 after a resize
        col = (kp.pt[0] + 0.5) / upscale - 0.5
        row = (kp.pt[1] + 0.5) / upscale - 0.5
        sigma = (kp.size + sigma_constant) / upscale
        key = (int(round(row * 4)), int(round(col * 4)))  # quarter-pixel grid: same location, other orientation
        cand = Keypoint(row=float(row), col=float(col), sigma=float(sigma), response=float(kp.response))
        if key not in merged or merged[key].response < cand.response:
            merged[key] = cand
    kps = sorted(merged.values(), key=lambda k: -k.response)
    if max_keypoints is not None:
        kps = kps[:max_keypoints]
    return kps


def gaussian_partition(keypoints: list[Keypoint], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign every pixel to the keypoint with the highest isotropic 2-D Gaussian pdf there.

    Returns ``(labels (H, W) int64, pdf (H, W) float64)``.
    """
    if not keypoints:
        raise ValueError("gaussian_partition needs at least one keypoint")
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    mu_r = np.array([k.row for k in keypoints])[:, None, None]
    mu_c = np.array([k.col for k in keypoints])[:, None, None]
    sig = np.array([k.sigma for k in keypoints])[:, None, None]
    # log-pdf avoids underflow far from narrow keypoints
    logpdf = -((rows - mu_r) ** 2 + (cols - mu_c) ** 2) / (2 * sig**2) - np.log(2 * np.pi * sig**2)
    labels = np.argmax(logpdf, axis=0)
    return labels.astype(np.int64), np.exp(np.max(logpdf, axis=0))


def extract_features(image: np.ndarray, upscale: int = 15, sigma_constant: float = 15.0,
                     max_keypoints: int | None = None) -> FeatureMap:
    """SIFT keypoints -> saliency distribution and Gaussian partition of the pixels of a (C, H, W) image.

    Keypoints that end up owning no pixel are dropped (they offer player II no move). An image where SIFT finds
    nothing (e.g. a blank image) gets a single feature centred on the image that covers every pixel, so the game
    still has moves; the feature map says so through its one keypoint with response 1.
    """
    _, h, w = image.shape
    kps = sift_keypoints(image, upscale=upscale, sigma_constant=sigma_constant, max_keypoints=max_keypoints)
    if not kps:
        kps = [Keypoint(row=(h - 1) / 2, col=(w - 1) / 2, sigma=max(h, w) / 2, response=1.0)]
    labels, pdf = gaussian_partition(kps, h, w)
    used = np.unique(labels)
    kps = [kps[i] for i in used]
    remap = np.full(labels.max() + 1, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    labels = remap[labels]
    resp = np.array([k.response for k in kps], dtype=np.float64)
    if resp.sum() <= 0:
        resp = np.ones_like(resp)
    return FeatureMap(keypoints=tuple(kps), saliency=resp / resp.sum(), partition=labels, pixel_weight=pdf)
