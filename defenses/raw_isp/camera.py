"""A synthetic camera: RGB -> RAW by an inverse ISP, RGGB Bayer mosaic and sensor noise, and the forward ISP.

The inverse ISP ("unprocessing", Brooks et al. 2019, without tone curve and highlights) undoes, in order:
1. the display gamma: linear = rgb ** gamma;
2. the colour matrix: camera = linear @ inv(ccm).T (ccm maps camera RGB to linear sRGB; rows sum to 1,
   so grey stays grey), clipped to [0, 1] because a sensor reads no negative light;
3. the white-balance gains: raw = camera / [r_gain, 1, b_gain].
Then the RGGB mosaic keeps one colour per pixel, packed into 4 half-resolution planes (R, Gr, Gb, B), and
heteroscedastic noise is added: raw + N(0, shot * raw + read ** 2). The forward ISP (the paper's "S" path after
demosaicing) applies the gains, the colour matrix and the gamma again, so forward(inverse(x)) == x for in-gamut
colours. Everything here is torch and differentiable except where the noise is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.color import CFA, raw_to_rgb, rgb_to_raw

# A typical camera-to-sRGB matrix (rows sum to 1), moderate saturation boost as in phone sensors.
DEFAULT_CCM = ((1.60, -0.45, -0.15), (-0.25, 1.45, -0.20), (-0.05, -0.50, 1.55))


@dataclass(frozen=True)
class CameraParams:
    """Parameters of the synthetic camera; ``seed`` fixes the noise draws of :meth:`SyntheticCamera.noisy`."""

    gamma: float = 2.2
    ccm: tuple[tuple[float, float, float], ...] = DEFAULT_CCM
    r_gain: float = 2.0
    b_gain: float = 1.6
    shot: float = 1e-3      # shot-noise variance per unit signal
    read: float = 2e-3      # read-noise standard deviation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gamma <= 0 or self.r_gain <= 0 or self.b_gain <= 0 or self.shot < 0 or self.read < 0:
            raise ValueError(f"camera parameters must be positive (gamma, gains) and >= 0 (noise): {self}")


def pack(mosaic: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) RGGB mosaic -> (N, 4, H/2, W/2) planes R, Gr, Gb, B."""
    return torch.stack([mosaic[:, 0, 0::2, 0::2], mosaic[:, 0, 0::2, 1::2],
                        mosaic[:, 0, 1::2, 0::2], mosaic[:, 0, 1::2, 1::2]], dim=1)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """(N, 4, H/2, W/2) planes R, Gr, Gb, B -> (N, 1, H, W) RGGB mosaic."""
    n, _, h, w = packed.shape
    out = packed.new_zeros(n, 1, 2 * h, 2 * w)
    out[:, 0, 0::2, 0::2], out[:, 0, 0::2, 1::2] = packed[:, 0], packed[:, 1]
    out[:, 0, 1::2, 0::2], out[:, 0, 1::2, 1::2] = packed[:, 2], packed[:, 3]
    return out


def mosaic(rgb: torch.Tensor) -> torch.Tensor:
    """Keep the RGGB colour of each pixel of (N, 3, H, W) images: (N, 1, H, W)."""
    # kornia names patterns OpenCV's way: CFA.BG is R at the top-left, i.e. RGGB (checked in the tests).
    return rgb_to_raw(rgb, CFA.BG)


class SyntheticCamera:
    """The camera of :class:`CameraParams`: RGB -> packed RAW (clean or noisy) and the forward ISP back."""

    def __init__(self, params: CameraParams | None = None) -> None:
        self.params = params or CameraParams()
        self.ccm = torch.tensor(self.params.ccm, dtype=torch.float32)
        self.ccm_inv = torch.linalg.inv(self.ccm)
        self.gains = torch.tensor([self.params.r_gain, 1.0, self.params.b_gain]).view(1, 3, 1, 1)

    def _even(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"the camera takes (N, 3, H, W) RGB images with even H and W, got {tuple(x.shape)}")

    def inverse_isp(self, rgb: torch.Tensor) -> torch.Tensor:
        """Display RGB -> demosaiced linear sensor RGB (before white balance), (N, 3, H, W)."""
        self._even(rgb)
        linear = rgb.clamp(0, 1).clamp_min(1e-8) ** self.params.gamma
        # The camera's constants live on the CPU and follow the images to their device.
        camera = torch.einsum("ij,njhw->nihw", self.ccm_inv.to(linear.device), linear).clamp(0, 1)
        return camera / self.gains.to(camera.device)

    def forward_isp(self, sensor: torch.Tensor) -> torch.Tensor:
        """Demosaiced linear sensor RGB -> display RGB in [0, 1]: gains, colour matrix, gamma."""
        camera = (sensor * self.gains.to(sensor.device)).clamp(0, 1)
        linear = torch.einsum("ij,njhw->nihw", self.ccm.to(camera.device), camera).clamp(1e-8, 1)
        return linear ** (1.0 / self.params.gamma)

    def raw(self, rgb: torch.Tensor) -> torch.Tensor:
        """Noise-free packed RAW (N, 4, H/2, W/2) of display RGB images."""
        return pack(mosaic(self.inverse_isp(rgb)))

    def add_noise(self, raw: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``raw`` plus shot and read noise, N(0, shot * raw + read^2); a fresh draw from ``generator``."""
        var = self.params.shot * raw.clamp_min(0) + self.params.read ** 2
        # Drawn by the CPU generator and moved: the same noise on every device.
        return raw + torch.randn(raw.shape, generator=generator).to(raw.device) * var.sqrt()

    def noisy(self, rgb: torch.Tensor) -> torch.Tensor:
        """Packed RAW with noise seeded by ``params.seed`` (the same images give the same draws)."""
        return self.add_noise(self.raw(rgb), torch.Generator().manual_seed(self.params.seed))


def bilinear_demosaic(packed: torch.Tensor) -> torch.Tensor:
    """Differentiable bilinear demosaicing (kornia) of packed RGGB RAW -> (N, 3, H, W) sensor RGB."""
    return raw_to_rgb(unpack(packed), CFA.BG)
