"""Figure for the feature-guided attack: original (with SIFT keypoints), adversarial, and changed pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rbl_core.figures import plt, save_figure


def _show(img: torch.Tensor) -> np.ndarray:
    arr = img.detach().cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def save_examples_figure(x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[int], adv_labels: Sequence[int],
                         path: str | Path, keypoints: Sequence[Sequence] | None = None,
                         class_names: Sequence[str] | None = None) -> Path:
    """One row per example: original (+ keypoints), adversarial, changed pixels (red = raised, blue = lowered)."""
    if x.shape != x_adv.shape or x.ndim != 4:
        raise ValueError(f"x and x_adv must both be (N, C, H, W), got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    n = x.shape[0]
    name = (lambda c: class_names[c]) if class_names else str
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for i in range(n):
        grey = x.shape[1] == 1
        axes[i, 0].imshow(_show(x[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        if keypoints is not None and keypoints[i]:
            axes[i, 0].scatter([k.col for k in keypoints[i]], [k.row for k in keypoints[i]], s=14,
                               facecolors="none", edgecolors="lime", linewidths=0.8)
        axes[i, 0].set_title(f"original: {name(int(labels[i]))}", fontsize=8)
        axes[i, 1].imshow(_show(x_adv[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[i, 1].set_title(f"adversarial: {name(int(adv_labels[i]))}", fontsize=8)
        diff = (x_adv[i] - x[i]).sum(dim=0).detach().cpu().numpy()
        changed = int(((x_adv[i] - x[i]).abs() > 1e-6).any(dim=0).sum())
        lim = max(float(np.abs(diff).max()), 1e-6)
        axes[i, 2].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[i, 2].set_title(f"changed pixels: {changed}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, path, dpi=110)


def save_outcomes_figure(x: torch.Tensor, y: torch.Tensor, outcomes: Sequence, adv_labels: Sequence[int],
                         path: str | Path, n: int = 4) -> Path | None:
    """Figure of the first ``n`` successful game searches of one attack call (``AttackResult.details``)."""
    idx = [i for i, o in enumerate(outcomes) if o.success and o.search is not None][:n]
    if not idx:
        return None
    x_adv = torch.stack([outcomes[i].x_adv for i in idx])
    kps = [list(outcomes[i].features.keypoints) for i in idx]
    return save_examples_figure(x[idx], x_adv, [int(y[i]) for i in idx], [int(adv_labels[i]) for i in idx], path,
                                keypoints=kps)
