"""Pairwise transferability between an ensemble's sub-models, DVERGE's measure of vulnerability overlap.

Entry (i, j) is the fraction of adversarial examples crafted on sub-model i (foolbox Linf PGD, step
eps/5, random starts) that also fool sub-model j, over images that *every* sub-model classifies
correctly (reference protocol: eps 0.03, 50 steps, 5 starts, 1,000 correct images). An example counts
as transferred if any restart's adversarial image fools j. The diagonal is the white-box success rate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import foolbox as fb  # noqa: E402

from rbl_core.figures import plt, save_figure  # noqa: E402
from rbl_core.remeasure import remeasure  # noqa: E402
from rbl_core.threat import ThreatModel  # noqa: E402
from rbl_core.training import predict  # noqa: E402


def correct_by_all(members: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the images every member classifies correctly."""
    mask = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for m in members:
        mask &= predict(m, x) == y
    return mask


def transferability_matrix(
    members: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 50,
    restarts: int = 5,
    n: int | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, int]:
    """(K, K) success rates of PGD examples from member i against member j, and the number of images used."""
    if len(members) < 2:
        raise ValueError(f"transferability needs at least 2 sub-models, got {len(members)}")
    if x.dim() != 4 or len(x) != len(y):
        raise ValueError(f"need NCHW images and one label each, got x {tuple(x.shape)}, y {tuple(y.shape)}")
    for m in members:
        m.eval()
    keep = correct_by_all(members, x, y)
    x, y = x[keep], y[keep]
    if n is not None:
        x, y = x[:n], y[:n]
    if len(x) == 0:
        raise ValueError("no image is classified correctly by every sub-model; cannot measure transferability")
    k = len(members)
    attack = fb.attacks.LinfPGD(abs_stepsize=eps / 5, steps=steps, random_start=True)
    threat = ThreatModel("Linf", eps)
    fooled = torch.zeros(k, k, len(x), dtype=torch.bool)
    for i, src in enumerate(members):
        # The images' device: Foolbox's own default would pick cuda:0 whenever CUDA exists.
        fmodel = fb.PyTorchModel(src, bounds=(0.0, 1.0), device=x.device)
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            for _ in range(restarts):
                _, x_adv, _ = attack(fmodel, xb, yb, epsilons=eps)
                for j, dst in enumerate(members):
                    fooled[i, j, s:s + len(xb)] |= remeasure(dst, xb, yb, x_adv, threat).success.cpu()
    return fooled.float().mean(-1).numpy(), len(x)


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """Average transfer success rate between distinct sub-models."""
    k = matrix.shape[0]
    return float((matrix.sum() - np.trace(matrix)) / (k * k - k))


def plot_transferability(matrix: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Save the matrix as an annotated heatmap PNG (rows: source model, columns: target model)."""
    k = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.8 * k))
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                    color="black" if matrix[i, j] > 0.5 else "white", fontsize=8)
    ax.set_xticks(range(k), [f"m{j}" for j in range(k)])
    ax.set_yticks(range(k), [f"m{i}" for i in range(k)])
    ax.set_xlabel("target sub-model")
    ax.set_ylabel("source sub-model")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path, dpi=100)
