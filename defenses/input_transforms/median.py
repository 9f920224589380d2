"""Median filtering (feature squeezing): kornia's median blur, which has a (sparse) gradient."""
from __future__ import annotations

import torch
from kornia.filters import median_blur
from torch import nn

from defenses.input_transforms.wrapper import DefenseError


class Median(nn.Module):
    """A ``kernel`` x ``kernel`` median filter (odd, >= 3) with reflected borders; differentiable."""

    adaptive = "e2e"

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        if int(kernel) < 3 or int(kernel) % 2 == 0:
            raise DefenseError(f"median filter kernel must be odd and >= 3, got {kernel}")
        self.kernel = int(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The filtered images."""
        return median_blur(x, self.kernel)
