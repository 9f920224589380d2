"""Bit-depth reduction (Xu et al., feature squeezing): round to 2^bits levels, BPDA backward."""
from __future__ import annotations

import torch
from torch import nn

from defenses.input_transforms.bpda import straight_through
from defenses.input_transforms.wrapper import DefenseError


class BitDepth(nn.Module):
    """Quantise each channel to ``bits`` bits; rounding has zero gradient, so the backward is straight-through."""

    adaptive = "bpda"

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise DefenseError(f"bit-depth reduction needs bits in [1, 8], got {bits}")
        self.bits = int(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised images."""
        levels = 2 ** self.bits - 1
        return straight_through(x, lambda z: torch.round(z * levels) / levels)
