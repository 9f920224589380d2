"""Training F and G on synthetic-camera pairs; run it under ``rbl_core.training.deterministic_training``.

* F: loss MSE(F(y), raw) + MSE(F(y + n), raw), n = s * N(0, sigma^2) per pixel with one s ~ N(0, 1) per image
  (the paper's noise-augmented loss; sigma = 0.1 as released), target = the camera's noise-free RAW.
* G: loss MSE(G(raw_noisy), y) on clean images only (no adversarial examples), raw_noisy = the camera's RAW
  with its shot/read noise, so G learns to demosaic, denoise and apply the ISP at once.
Adam, constant learning rate, seeded batch order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defenses.raw_isp.camera import SyntheticCamera
from rbl_core.data import index_batches
from rbl_core.training import fit, make_optimizer


@dataclass(frozen=True)
class OperatorTraining:
    """Settings of one operator's training run."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    noise_sigma: float = 0.1     # F only: std of the per-pixel input noise before the per-image scale
    seed: int = 0


Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def _fit(model: nn.Module, rgb: torch.Tensor, camera: SyntheticCamera, cfg: OperatorTraining, loss: Loss) -> nn.Module:
    """Adam on ``loss(model, rgb batch, clean RAW batch, generator)`` over seeded batches; eval mode after."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        raw = camera.raw(rgb)
    fit(model, make_optimizer(model.parameters(), lr=cfg.lr),
        lambda epoch: index_batches(len(rgb), cfg.batch_size, torch.Generator().manual_seed(cfg.seed * 1000 + epoch)),
        lambda idx, _step: loss(model, rgb[idx], raw[idx], gen), epochs=range(cfg.epochs))
    return model


def train_f(model: nn.Module, rgb: torch.Tensor, camera: SyntheticCamera, cfg: OperatorTraining) -> nn.Module:
    """Fit F on ``rgb`` images to the camera's RAW with the noise-augmented loss; returns F in eval mode."""
    def loss(f: nn.Module, y: torch.Tensor, target: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        scale = torch.randn(len(y), 1, 1, 1, generator=gen)
        noise = scale * cfg.noise_sigma * torch.randn(y.shape, generator=gen)
        return F.mse_loss(f(y), target) + F.mse_loss(f(y + noise), target)

    return _fit(model, rgb, camera, cfg, loss)


def train_g(model: nn.Module, rgb: torch.Tensor, camera: SyntheticCamera, cfg: OperatorTraining) -> nn.Module:
    """Fit G to map the camera's noisy RAW of ``rgb`` back to ``rgb`` (MSE); returns G in eval mode."""
    def loss(g: nn.Module, y: torch.Tensor, raw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return F.mse_loss(g(camera.add_noise(raw, gen)), y)   # a fresh noise draw every epoch

    return _fit(model, rgb, camera, cfg, loss)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] over the whole batch."""
    mse = float(((x.clamp(0, 1) - ref) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
