"""The GAN caption attack (Aafaq et al., arXiv 2107.03050; reconstruction of seeds.md section 2).

A generator G, trained for one target image x_t, gives x' = clip(x + eps * tanh(G(x)), 0, 1), so
||x' - x||_inf <= eps by construction. G is trained on the captioner's frozen encoder phi so that phi(x')
mimics phi(x_t), the exact feature grid the decoder reads, over many source images:

    L_G = alpha * ||phi(x') - phi(x_t)||^2  +  lam * L_adv(G)  +  beta * ||x' - x||_2^2 / d

with the non-saturating GAN term L_adv(G) = -log D(x') of a discriminator D trained to tell clean images from
x' (L_D = -log D(x) - log(1 - D(x'))). ``adv_weight = 0`` drops D: the "without discriminator" variant.

One G per target (and eps), trained on train scenes and applied to unseen test scenes in one forward pass: the
attack is amortised, unlike the per-image PGD baselines in :mod:`attacks.caption.baselines`. We condition G on
the target by training it for that target (one generator per target caption or keyword image): a generator
conditioned on arbitrary target images did not fit in this suite's CPU budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rbl_core.config import check_ranges, ranged
from rbl_core.training import deterministic_training, make_optimizer


@dataclass(frozen=True)
class GANConfig:
    """Training settings of one generator (Adam with beta1 = 0.5, as in seeds.md section 2 (b))."""

    steps: int = ranged(400, ge=1)           # generator updates (batches of batch_size train images)
    batch_size: int = ranged(32, ge=1)
    lr: float = ranged(1e-3, gt=0)
    # Adam moves every parameter by about lr per step, so at lr 5e-3 the shared bias needs ~1,000 steps to
    # reach tanh's range; its own larger lr gets there in 300 (keyword hits at eps 0.3: 8.3 % -> 25 %)
    bias_lr: float = ranged(0.05, gt=0)
    alpha: float = ranged(10.0, gt=0)        # weight of the feature-mimicking loss
    adv_weight: float = ranged(0.1, ge=0)    # weight of the discriminator term; 0 = no discriminator
    beta: float = ranged(0.0, ge=0)          # weight of the perturbation's mean squared size
    width: int = ranged(32, ge=1)            # generator and discriminator channels

    def __post_init__(self) -> None:
        check_ranges(self)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.relu(x + self.body(x))


class Generator(nn.Module):
    """A small fully convolutional ResNet-style generator (two residual blocks) plus a learned image-sized bias.

    The bias is the part of the perturbation every source shares for this target (where the target's objects
    are drawn); the convolutional part adapts it to each source (where its own objects must be hidden).
    """

    def __init__(self, width: int = 32, shape: tuple[int, int, int] = (3, 16, 48)) -> None:
        super().__init__()
        channels = shape[0]
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                 _Residual(width), _Residual(width), nn.Conv2d(width, channels, 3, padding=1))
        self.bias = nn.Parameter(torch.zeros(1, *shape))
        # small last layer: tanh(G(x)) starts near 0, in its linear range, not saturated at +-1
        last = self.net[-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x) + self.bias


class Discriminator(nn.Module):
    """Clean-vs-generated image classifier: one logit per image."""

    def __init__(self, width: int = 32, channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x).squeeze(1)


def perturb(generator: nn.Module, x: torch.Tensor, eps: float, straight_through: bool = False) -> torch.Tensor:
    """x' = clip(x + eps * tanh(G(x)), 0, 1): inside the Linf ball of radius eps by construction.

    ``straight_through`` (training only) keeps the same x' but passes the gradient through the clip unchanged:
    on the black background (x = 0) every negative perturbation is clipped, and a plain clamp then gives G no
    gradient there, so a G that once turned negative on the background could never learn to draw on it.
    """
    raw = x + eps * torch.tanh(generator(x))
    if straight_through:
        return raw + (raw.clamp(0, 1) - raw).detach()
    return raw.clamp(0, 1)


def feature_loss(grid: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image squared L2 distance between feature grids, averaged over the grid's elements."""
    return (grid - target).pow(2).flatten(1).mean(dim=1)


def train_generator(model: nn.Module, x_train: torch.Tensor, target_grid: torch.Tensor, eps: float,
                    cfg: GANConfig = GANConfig(), seed: int = 0) -> Generator:
    """Train G for one target grid (C, H, W) on ``x_train`` against the frozen ``model.encode`` (a captioner); eval mode."""
    if not 0 < eps <= 1:
        raise ValueError(f"eps must lie in (0, 1], got {eps}")
    if target_grid.dim() != 3:
        raise ValueError(f"target_grid must be one (C, H, W) feature grid, got shape {tuple(target_grid.shape)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    g, d = Generator(cfg.width, tuple(x_train.shape[1:])), Discriminator(cfg.width, x_train.shape[1])
    conv = [p for n, p in g.named_parameters() if n != "bias"]
    opt_g = make_optimizer([{"params": conv}, {"params": [g.bias], "lr": cfg.bias_lr}], lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = make_optimizer(d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    target = target_grid.detach().unsqueeze(0)
    try:
        # one thread, deterministic kernels, oneDNN off: a seeded generator is the same on every machine
        with deterministic_training():
            # Not rbl_core.training.fit: each step alternates two updates, D on its loss, then G against that D.
            for _ in range(cfg.steps):
                x = x_train[torch.randint(len(x_train), (cfg.batch_size,), generator=gen)]
                x_adv = perturb(g, x, eps, straight_through=True)
                if cfg.adv_weight > 0:
                    real, fake = d(x), d(x_adv.detach())
                    loss_d = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                              + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
                    opt_d.zero_grad()
                    loss_d.backward()
                    opt_d.step()
                loss = cfg.alpha * feature_loss(model.encode(x_adv), target).mean()
                if cfg.adv_weight > 0:
                    fooled = d(x_adv)
                    loss = loss + cfg.adv_weight * F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
                if cfg.beta > 0:
                    loss = loss + cfg.beta * (x_adv - x).pow(2).flatten(1).mean(dim=1).mean()
                opt_g.zero_grad()
                loss.backward()
                opt_g.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return g.eval()
