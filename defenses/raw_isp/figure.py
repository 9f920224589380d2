"""One row of images through a preprocessing defense: RGB, RAW mosaic, reconstruction, adversarial, defended."""
from __future__ import annotations

from pathlib import Path

import torch

from rbl_core.figures import plt, save_figure


def _show(ax, img: torch.Tensor, title: str) -> None:
    img = img.detach().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def pipeline_figure(panels: list[tuple[str, torch.Tensor]], path: str | Path, title: str) -> Path:
    """Write ``panels`` (title, CHW image in [0, 1]) side by side to ``path``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.0 * len(panels), 2.4))
    for ax, (name, img) in zip(list(axes), panels):
        _show(ax, img, name)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
