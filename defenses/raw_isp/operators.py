"""The learned operators: F (RGB -> packed RAW, a small CNN) and G (packed RAW -> RGB, a small U-Net).

F follows the released encoder (3x3 convolutions, ReLU between them) at CPU width, but works at half
resolution after a pixel-unshuffle so its output planes line up with the RGGB sites, and its last layer is
linear: the released code's final ReLU would clip the negative RAW values that noise and black-level
offsets produce. G is a two-level U-Net standing in for PyNET; its output is display RGB (clamped to [0, 1]
by the pipeline, not here, so training sees the raw error).
"""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]


class RGBToRaw(nn.Module):
    """F: (N, 3, H, W) display RGB -> (N, 4, H/2, W/2) packed RGGB RAW."""

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2), *_conv(12, width)]
        for _ in range(depth - 1):
            layers += _conv(width, width)
        layers.append(nn.Conv2d(width, 4, 3, padding=1))   # linear: negative RAW values survive
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Packed RAW estimate of ``x``."""
        return self.net(x)


class RawToRGB(nn.Module):
    """G: (N, 4, H/2, W/2) packed RAW -> (N, 3, H, W) display RGB (a two-level U-Net, pixel-shuffle output)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(*_conv(4, width), *_conv(width, width))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), *_conv(width, 2 * width), *_conv(2 * width, 2 * width))
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = nn.Sequential(*_conv(2 * width, width), *_conv(width, width))
        self.out = nn.Sequential(nn.Conv2d(width, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """RGB reconstruction of packed ``raw`` (H/2 and W/2 must be even)."""
        e1 = self.enc1(raw)
        d = self.dec(torch.cat([self.up(self.enc2(e1)), e1], dim=1))
        return self.out(d)
