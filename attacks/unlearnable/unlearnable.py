"""CUDA: Convolution-based Unlearnable DAtasets (Sadasivan, Soltanolkotabi, Feizi; CVPR 2023).

A data owner blurs every training image of class c with a private random k x k kernel K_c, so a
network trained on the released data learns the "which blur?" -> label shortcut instead of the
content and fails on clean test images. Clean-room implementation from the paper's description:

* kernels: one per class, drawn from the private key; every tap ~ U(0, blur), then one uniformly
  chosen tap is set to 1 (keeps the image recognisable); the same kernel is applied to every
  channel (depthwise), zero padding, so the size is unchanged;
* poison: x~ = (K_y * x) / max(K_y * x), the maximum taken over all pixels and channels of that
  image (a brightness change, not a min-max stretch), then stored as uint8 (clip(255 x~));
* a fraction ``mix`` of the images (chosen by the key) is poisoned, the rest stay clean;
* ``same=True`` is the paper's control: one kernel for every class (no label-correlated shortcut).

All images of a batch are convolved in one grouped convolution (groups = N * C, each group with
its own image's class kernel), so there is no per-image Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rbl_core.config import ranged

__all__ = [
    "CudaConfig",
    "CudaKernels",
    "PoisonedImages",
    "class_kernels",
    "convolve_by_class",
    "normalise_by_max",
    "quantise_uint8",
    "select_poisoned",
    "poison_images",
    "to_uint8_images",
]

# Images per grouped-conv call: bounds peak memory (a CIFAR chunk is ~25 MB of float32).
_CHUNK = 2048


@dataclass(frozen=True)
class CudaKernels:
    """The class kernels; ``key`` is the data owner's private key (an integer seed)."""

    kernel_size: int = ranged(3, ge=3)       # odd
    blur: float = ranged(0.3, gt=0, le=1)    # taps ~ U(0, blur), one tap = 1
    key: int = ranged(0, ge=0)


@dataclass(frozen=True, kw_only=True)   # so that no positional call can take mix or same for key
class CudaConfig(CudaKernels):
    """Poisoning hyper-parameters: the kernels, the poisoned fraction and the one-kernel control."""

    mix: float = 1.0
    same: bool = False

    def __post_init__(self) -> None:
        _check_kernel_size(self.kernel_size)
        _check_blur(self.blur)
        if isinstance(self.mix, bool) or not isinstance(self.mix, (int, float)) or not 0.0 <= float(self.mix) <= 1.0:
            raise ValueError(f"CUDA: mix must be a fraction in [0, 1], got {self.mix!r}")
        if isinstance(self.key, bool) or not isinstance(self.key, (int, np.integer)) or int(self.key) < 0:
            raise ValueError(f"CUDA: key must be a non-negative integer seed, got {self.key!r}")


@dataclass
class PoisonedImages:
    """Output of :func:`poison_images`: uint8 NCHW images plus what is needed to audit them."""

    x: torch.Tensor         # uint8 (N, C, H, W)
    y: torch.Tensor         # int64 (N,)
    poisoned: torch.Tensor  # bool (N,): which images were blurred
    kernels: torch.Tensor   # float32 (num_classes, k, k): the private class kernels
    config: CudaConfig

    def as_float(self) -> torch.Tensor:
        """Images as float32 in [0, 1], the harness' model-input convention."""
        return self.x.float().div_(255.0)


def _check_kernel_size(kernel_size: object) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)):
        raise ValueError(f"CUDA: kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        # even kernels cannot keep the image size with symmetric padding; k = 1 is the identity
        raise ValueError(f"CUDA: kernel_size must be an odd integer >= 3, got {kernel_size}")


def _check_blur(blur: object) -> None:
    if isinstance(blur, bool) or not isinstance(blur, (int, float)) or not 0.0 < float(blur) <= 1.0:
        raise ValueError(f"CUDA: blur parameter must lie in (0, 1], got {blur!r}")


def class_kernels(num_classes: int, kernel_size: int = 3, blur: float = 0.3, key: int = 0,
                  same: bool = False) -> torch.Tensor:
    """Draw the private kernels: (num_classes, k, k) float32, taps U(0, blur), one tap = 1."""
    _check_kernel_size(kernel_size)
    _check_blur(blur)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"CUDA: num_classes must be a positive integer, got {num_classes!r}")
    rng = np.random.default_rng(int(key))
    n_draw = 1 if same else int(num_classes)
    taps = rng.uniform(0.0, float(blur), size=(n_draw, kernel_size * kernel_size))
    centre = rng.integers(0, kernel_size * kernel_size, size=n_draw)
    taps[np.arange(n_draw), centre] = 1.0
    kernels = torch.from_numpy(taps.reshape(n_draw, kernel_size, kernel_size).astype(np.float32))
    if same:
        kernels = kernels.expand(int(num_classes), kernel_size, kernel_size).contiguous()
    return kernels


def _check_labels(y: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"CUDA: labels must have shape ({n},), got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"CUDA: labels must be integers, got dtype {y.dtype}")
    y = y.long()
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"CUDA: labels must lie in [0, {num_classes - 1}] (one kernel per class), "
                         f"got range [{int(y.min())}, {int(y.max())}]")
    return y


def _check_images(x: torch.Tensor, kernel_size: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"CUDA: images must be NCHW (4-D), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"CUDA: images must have 1 (grey) or 3 (colour) channels, got {x.shape[1]}")
    if min(x.shape[2], x.shape[3]) < kernel_size:
        raise ValueError(f"CUDA: kernel_size {kernel_size} is larger than the images "
                         f"({x.shape[2]}x{x.shape[3]})")


def convolve_by_class(x: torch.Tensor, y: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve image i with ``kernels[y[i]]`` on each channel: one grouped conv, groups = N * C."""
    k = kernels.shape[-1]
    if kernels.dim() != 3 or kernels.shape[1] != k or k % 2 == 0:
        raise ValueError(f"CUDA: kernels must be (num_classes, k, k) with odd k, got {tuple(kernels.shape)}")
    _check_images(x, k)
    y = _check_labels(y, x.shape[0], kernels.shape[0])
    n, c, h, w = x.shape
    kernels = kernels.to(torch.float32)
    chunks = []
    for start in range(0, n, _CHUNK):
        xb = x[start:start + _CHUNK].to(torch.float32)
        m = xb.shape[0]
        # weight row g = i * C + ch holds image i's class kernel: same kernel on every channel
        weight = kernels[y[start:start + m]].repeat_interleave(c, dim=0).unsqueeze(1)
        chunks.append(F.conv2d(xb.reshape(1, m * c, h, w), weight, padding=k // 2,
                               groups=m * c).reshape(m, c, h, w))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def normalise_by_max(z: torch.Tensor) -> torch.Tensor:
    """Divide each image by its own maximum over all pixels and channels (the paper's normalisation)."""
    peak = z.amax(dim=(1, 2, 3), keepdim=True)
    # an all-black image stays black instead of becoming NaN
    return z / peak.clamp_min_(1e-12)


def quantise_uint8(x: torch.Tensor) -> torch.Tensor:
    """clip(255 x, 0, 255) truncated to uint8, as the released poisoned data is stored."""
    return x.mul(255.0).clamp_(0.0, 255.0).to(torch.uint8)


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """Accept uint8 or float [0, 1] NCHW images and return uint8 (exact for x = uint8 / 255)."""
    if x.dtype == torch.uint8:
        return x
    if not x.dtype.is_floating_point:
        raise ValueError(f"CUDA: images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"CUDA: float images must lie in [0, 1], got range "
                         f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return (x * 255.0).round_().to(torch.uint8)


def select_poisoned(n: int, mix: float, key: int) -> torch.Tensor:
    """Boolean mask of exactly round(mix * n) images chosen by the key (the rest stay clean)."""
    n_poison = int(round(float(mix) * n))
    # a stream independent of the kernel draw, so changing mix never changes the kernels
    rng = np.random.default_rng([int(key), 1])
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:n_poison]] = True
    return torch.from_numpy(mask)


def _scale_to_255(z: torch.Tensor) -> torch.Tensor:
    """Per-image factor s with s * max(z) >= 255 exactly in float32: normalise_by_max + quantise_uint8
    fused into one in-place multiply. s is 255 / max rounded *up* to the next float32, so each image's
    peak pixel truncates to exactly 255 (as (z / max) * 255 does); other pixels agree within one level.
    No clip is needed: taps and pixels are >= 0 and z <= max(z), so every value lies in [0, 255 + ulp]."""
    peak = z.amax(dim=(1, 2, 3), keepdim=True).double().clamp_min_(1e-12)
    scale = (255.0 / peak).float()
    return torch.nextafter(scale, torch.full_like(scale, float("inf")))


def poison_images(x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  config: CudaConfig = CudaConfig()) -> PoisonedImages:
    """Make a CUDA-poisoned copy of (x, y): uint8 or float [0,1] NCHW in, uint8 NCHW out."""
    if not isinstance(config, CudaConfig):
        raise TypeError(f"CUDA: config must be a CudaConfig, got {type(config).__name__}")
    x_u8 = to_uint8_images(torch.as_tensor(x))
    _check_images(x_u8, config.kernel_size)
    y = _check_labels(y, x_u8.shape[0], int(num_classes))
    kernels = class_kernels(int(num_classes), config.kernel_size, config.blur, config.key, config.same)
    mask = select_poisoned(x_u8.shape[0], config.mix, config.key)
    idx = mask.nonzero().flatten()
    full = len(idx) == len(mask)  # mix = 1: plain slices, no gather/scatter copies
    out = torch.empty_like(x_u8) if full else x_u8.clone()
    for start in range(0, len(idx), _CHUNK):
        sel = slice(start, start + _CHUNK) if full else idx[start:start + _CHUNK]
        z = convolve_by_class(x_u8[sel], y[sel], kernels)
        z.mul_(_scale_to_255(z))
        if full:
            out[sel].copy_(z)  # float -> uint8 truncation, written straight into the output
        else:
            out[sel] = z.to(torch.uint8)
    return PoisonedImages(x=out, y=y, poisoned=mask, kernels=kernels, config=config)
