"""Jacobian-based Saliency Map Attack (Papernot et al., EuroS&P 2016): the white-box L0 baseline.

Foolbox 3 dropped its ``SaliencyMapAttack``, so this is a direct implementation: each step takes the Jacobian of
the logits, scores every pair of input elements (p, q) by the saliency map of the paper's Algorithm 3
(alpha = d(Z_t)/dx_p + d(Z_t)/dx_q > 0, beta = sum over other classes < 0, score = -alpha * beta for theta > 0),
and moves both by theta. Untargeted use picks the runner-up class at the clean input as the target.
"""

from __future__ import annotations

import torch
from torch import nn

from attacks.base import AttackError, AttackResult, EvasionAttack
from rbl_core.threat import ThreatModel


class JSMAAttack(EvasionAttack):
    """JSMA with pairwise saliency; minimises the number of changed pixels (L0)."""

    norms = ("L0",)
    minimization = True

    def __init__(self, name: str = "jsma", theta: float = 1.0, gamma: float = 0.145,
                 max_pair_features: int = 1024) -> None:
        if theta == 0 or abs(theta) > 1:
            raise AttackError(f"jsma: theta must be in [-1, 0) or (0, 1], got {theta}")
        if not 0 < gamma <= 1:
            raise AttackError(f"jsma: gamma (max share of changed elements) must be in (0, 1], got {gamma}")
        self.name, self.theta, self.gamma = name, float(theta), float(gamma)
        # pairs are scored among at most this many domain elements (those with the best single-element
        # saliency): exact for MNIST (784), a 9x cheaper approximation for 32x32x3 inputs
        self.max_pair_features = int(max_pair_features)

    def _one(self, model: nn.Module, x: torch.Tensor, y: int) -> torch.Tensor:
        """Attack one (C, H, W) image; returns the last iterate (adversarial or at the gamma limit)."""
        n = x.numel()
        x_adv = x.clone().reshape(1, -1)
        with torch.no_grad():
            logits = model(x[None])
        target = int(logits[0].topk(2).indices[1]) if int(logits[0].argmax()) == y else int(logits[0].argmax())
        # search domain: elements that can still move in theta's direction
        domain = (x_adv[0] < 1.0) if self.theta > 0 else (x_adv[0] > 0.0)
        max_iters = int(n * self.gamma / 2)
        for _ in range(max_iters):
            inp = x_adv.reshape(1, *x.shape).clone().requires_grad_(True)
            out = model(inp)
            if int(out[0].argmax()) == target or int(out[0].argmax()) != y:
                break
            g_t = torch.autograd.grad(out[0, target], inp, retain_graph=True)[0].reshape(-1)
            g_o = torch.autograd.grad(out[0].sum() - out[0, target], inp)[0].reshape(-1)
            cand = torch.nonzero(domain).flatten()
            if len(cand) > self.max_pair_features:
                single = (g_t - g_o) if self.theta > 0 else (g_o - g_t)
                cand = cand[single[cand].topk(self.max_pair_features).indices]
            gt, go = g_t[cand], g_o[cand]
            alpha = gt[:, None] + gt[None, :]
            beta = go[:, None] + go[None, :]
            ok = ~torch.eye(len(cand), dtype=torch.bool)
            ok &= (alpha > 0) & (beta < 0) if self.theta > 0 else (alpha < 0) & (beta > 0)
            if not ok.any():
                break
            score = torch.where(ok, -alpha * beta if self.theta > 0 else alpha * beta.abs(), torch.tensor(-1.0))
            i, j = divmod(int(score.argmax()), len(cand))
            p, q = int(cand[i]), int(cand[j])
            with torch.no_grad():
                x_adv[0, [p, q]] = (x_adv[0, [p, q]] + self.theta).clamp(0, 1)
            # the paper removes both features from the domain once used
            domain[p] = domain[q] = False
        return x_adv.reshape(x.shape).detach()

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Attack each image (white-box: uses the model's gradients); L0 counts changed pixels."""
        x_adv = torch.stack([self._one(model, x[i], int(y[i])) for i in range(x.shape[0])]) if len(x) else x.clone()
        with torch.no_grad():
            return AttackResult(x_adv, model(x_adv).argmax(dim=1) != y)
