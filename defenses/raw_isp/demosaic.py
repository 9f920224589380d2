"""The classical "S" path: the synthetic camera's RAW of x, demosaiced (colour-demosaicing), forward ISP.

Bilinear demosaicing is linear and runs in kornia (differentiable); Malvar (2004) runs in the
colour-demosaicing package on numpy, so its backward is straight-through (BPDA): the gradient of the
whole path is taken through the camera and the forward ISP with the demosaicing step as the identity on
the sensor image it would reproduce.
"""
from __future__ import annotations

import numpy as np
import torch
from colour_demosaicing import demosaicing_CFA_Bayer_Malvar2004
from torch import nn

from defenses.input_transforms.bpda import straight_through
from defenses.input_transforms.wrapper import DefenseError
from defenses.raw_isp.camera import CameraParams, SyntheticCamera, bilinear_demosaic, mosaic, pack, unpack

METHODS = ("bilinear", "malvar")


def malvar_demosaic(packed: torch.Tensor) -> torch.Tensor:
    """Malvar-He-Cutler demosaicing of packed RGGB RAW (numpy, not differentiable) -> (N, 3, H, W)."""
    planes = unpack(packed).detach().cpu().numpy()[:, 0].astype(np.float64)
    out = np.stack([demosaicing_CFA_Bayer_Malvar2004(p, "RGGB") for p in planes])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(packed.device, packed.dtype)


class ClassicalISP(nn.Module):
    """x -> camera RAW (noise-free) -> demosaic (``bilinear`` or ``malvar``) -> forward ISP, in [0, 1]."""

    channels = 3

    def __init__(self, method: str = "malvar", camera: CameraParams | None = None) -> None:
        super().__init__()
        if method not in METHODS:
            raise DefenseError(f"demosaicing method must be one of {METHODS}, got {method!r}")
        self.method, self.camera = method, SyntheticCamera(camera)
        self.adaptive = "e2e" if method == "bilinear" else "bpda"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The classical reconstruction of ``x``."""
        sensor = self.camera.inverse_isp(x)
        if self.method == "bilinear":
            demosaiced = bilinear_demosaic(pack(mosaic(sensor)))
        else:
            # BPDA: the identity on the sensor image stands in for mosaicing + Malvar demosaicing.
            demosaiced = straight_through(sensor, lambda s: malvar_demosaic(pack(mosaic(s))))
        return self.camera.forward_isp(demosaiced).clamp(0, 1)
