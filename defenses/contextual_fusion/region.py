"""Any evasion attack restricted to a per-example pixel region (the foreground mask), with no change to the attack.

Attack libraries perturb a whole image, and AutoAttack re-batches and sub-selects examples internally, so a
model wrapper cannot know which mask belongs to which input from its position in the batch. The wrapper here
carries the example's index in one extra input plane instead: the plane holds the index in binary (pixel
values 0 or 1), which an Linf perturbation below 0.5 cannot flip, and the plane gets no gradient. The wrapped
model sees ``x0 + mask * (z - x0)``: outside the mask every pixel is the original, inside it is the attacker's,
and the result stays inside the Linf ball and [0, 1] whenever ``z`` does (a per-pixel convex combination).
Linf only: under L2 the attacker's budget would be spent on the index plane too.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class RegionRestricted(nn.Module):
    """``model`` seen through a per-example region: input (N, C + 1, H, W), the last plane an index code."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        if x0.ndim != 4 or mask.shape != x0.shape:
            raise ValueError(f"RegionRestricted: x0 (N, C, H, W) and a mask of the same shape, got "
                             f"{tuple(x0.shape)} and {tuple(mask.shape)}")
        self.model = model
        self.register_buffer("x0", x0.detach().clone())
        self.register_buffer("mask", mask.detach().clone().to(x0.dtype))
        self.bits = max(1, math.ceil(math.log2(max(len(x0), 2))))
        if self.bits > x0.shape[-2] * x0.shape[-1]:
            raise ValueError(f"RegionRestricted: {len(x0)} examples need {self.bits} index pixels, more than one plane")

    def encode(self) -> torch.Tensor:
        """The attack's clean input: every ``x0`` with its index plane appended."""
        n, _, h, w = self.x0.shape
        powers = 2 ** torch.arange(self.bits)
        code = ((torch.arange(n)[:, None] // powers) % 2).to(self.x0.dtype)
        plane = torch.zeros(n, h * w, dtype=self.x0.dtype)
        plane[:, :self.bits] = code
        return torch.cat([self.x0, plane.view(n, 1, h, w)], dim=1)

    def _index(self, z: torch.Tensor) -> torch.Tensor:
        bits = z[:, -1].detach().flatten(1)[:, :self.bits].round().long()
        idx = (bits * (2 ** torch.arange(self.bits))).sum(1)
        if bool((idx >= len(self.x0)).any()):
            raise ValueError("RegionRestricted: an index plane was changed by 0.5 or more (Linf eps must be < 0.5)")
        return idx

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The image the wrapped model saw for attack output ``z``: ``x0 + mask * (z - x0)``, index plane dropped."""
        idx = self._index(z)
        x0, m = self.x0[idx], self.mask[idx]
        return x0 + m * (z[:, :-1] - x0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(self.project(z))
