"""The RAW defense as a transform: x -> G(F(x)) (optionally with camera noise on the RAW), and its parts."""
from __future__ import annotations

import torch
from torch import nn

from defenses.raw_isp.camera import CameraParams, SyntheticCamera


class RawISP(nn.Module):
    """G(F(x)) clamped to [0, 1]; with ``noise`` the camera's shot/read noise is drawn on F(x) at every call.

    The whole map is differentiable, so its adaptive attack is end to end (``e2e``); with noise it is random,
    and the adaptive attack averages over draws (``eot``).
    """

    channels = 3

    def __init__(self, f: nn.Module, g: nn.Module, noise: bool = False, camera: CameraParams | None = None) -> None:
        super().__init__()
        self.f, self.g, self.noise = f.eval(), g.eval(), bool(noise)
        self.camera = SyntheticCamera(camera)
        self.adaptive = "eot" if self.noise else "e2e"
        for p in self.parameters():
            p.requires_grad_(False)   # frozen: gradients flow to the input only

    def to_raw(self, x: torch.Tensor) -> torch.Tensor:
        """F(x), with a fresh noise draw when ``noise`` is on (packed RGGB, half resolution)."""
        raw = self.f(x)
        return self.camera.add_noise(raw) if self.noise else raw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction G(F(x)) in [0, 1]."""
        return self.g(self.to_raw(x)).clamp(0, 1)
