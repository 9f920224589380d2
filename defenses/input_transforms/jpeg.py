"""JPEG compression as a defense: kornia's differentiable JPEG codec (Shin & Song 2017 style rounding)."""
from __future__ import annotations

import torch
from kornia.enhance import jpeg_codec_differentiable
from torch import nn

from defenses.input_transforms.wrapper import DefenseError


class JPEG(nn.Module):
    """Encode and decode RGB images at JPEG ``quality`` (1-100); differentiable end to end."""

    adaptive = "e2e"
    channels = 3   # the codec works in YCbCr

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise DefenseError(f"JPEG quality must be in [1, 100], got {quality}")
        self.quality = int(quality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The JPEG-decoded images (same shape, in [0, 1])."""
        q = torch.full((x.shape[0],), float(self.quality), dtype=x.dtype, device=x.device)
        return jpeg_codec_differentiable(x, q).clamp(0, 1)
