"""The figure of a caption-attack run: clean image, perturbation, adversarial image and the three captions."""
from __future__ import annotations

from pathlib import Path

import torch

from rbl_core.figures import plt, save_figure


def save_caption_figure(x: torch.Tensor, x_adv: torch.Tensor, clean: list[str], target: list[str],
                        adversarial: list[str], path: str | Path, title: str = "") -> Path:
    """One row per example: image, perturbation (rescaled to [0, 1]), x'; captions under each row."""
    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=(9, 1.5 * n + 0.4), squeeze=False)
    for i in range(n):
        delta = x_adv[i] - x[i]
        scale = float(delta.abs().max()) or 1.0
        panels = (x[i], 0.5 + 0.5 * delta / scale, x_adv[i])
        names = ("image", f"perturbation (x{0.5 / scale:.1f})", "adversarial")
        for ax, img, name in zip(axes[i], panels, names):
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
        axes[i][1].set_xlabel(f"clean: {clean[i]}\ntarget: {target[i]}\nadversarial: {adversarial[i]}",
                              fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
