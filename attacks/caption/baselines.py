"""Per-image Linf PGD baselines of the GAN caption attack, on the same images, targets and eps.

* ``pgd_feature``: PGD on ||phi(x') - phi(x_t)||^2 without a generator (seeds.md: an upper bound on what G can
  learn, since it optimises each image on its own);
* ``decoder_gradient``: Show-and-Fool style (Chen et al., ACL 2018): back-propagate through the decoder, PGD on
  the teacher-forced cross-entropy of the target caption's tokens.

Both are sign-gradient descent with step ``2.5 * eps / steps`` from x, projected onto the eps ball and [0, 1].
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from attacks.caption.captioner import Captioner
from attacks.caption.gan import feature_loss
from attacks.caption.scenes import PAD_ID


def _pgd(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Minimise the per-image ``loss_fn`` by Linf PGD; returns x' with ||x' - x||_inf <= eps, in [0, 1]."""
    if not 0 < eps <= 1 or steps < 1:
        raise ValueError(f"PGD needs eps in (0, 1] and steps >= 1, got eps={eps}, steps={steps}")
    step = 2.5 * eps / steps
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
        with torch.no_grad():
            x_adv = torch.minimum(torch.maximum(x_adv - step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def pgd_feature(model: Captioner, x: torch.Tensor, target_grid: torch.Tensor, eps: float,
                steps: int = 50) -> torch.Tensor:
    """PGD feature matching: move the encoder grid of every x towards ``target_grid`` (C, H, W or N, C, H, W)."""
    target = target_grid.detach().expand(x.shape[0], *target_grid.shape[-3:])
    return _pgd(lambda z: feature_loss(model.encode(z), target), x, eps, steps)


def decoder_gradient(model: Captioner, x: torch.Tensor, target_tokens: torch.Tensor, eps: float,
                     steps: int = 50) -> torch.Tensor:
    """Show-and-Fool style: PGD on the teacher-forced CE of ``target_tokens`` (T,) or (N, T) through the decoder."""
    tokens = target_tokens.expand(x.shape[0], target_tokens.shape[-1])

    def loss(z: torch.Tensor) -> torch.Tensor:
        logits = model(z, tokens)
        ce = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], ignore_index=PAD_ID, reduction="none")
        return ce.sum(dim=1)

    return _pgd(loss, x, eps, steps)
