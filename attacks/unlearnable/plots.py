"""Figures for CUDA: clean-test accuracy vs poisoned fraction, and a clean vs poisoned image grid."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from attacks.unlearnable.evaluation import CudaEvalResult
from attacks.unlearnable.unlearnable import PoisonedImages
from rbl_core.data import DataSplit
from rbl_core.figures import plt, save_figure

__all__ = ["plot_accuracy_vs_mix", "plot_image_grid"]


def plot_accuracy_vs_mix(results: list[CudaEvalResult], path: str | Path) -> Path:
    """One line per (training, augmentation): clean test accuracy of the victim vs mix (0 = clean data)."""
    lines: dict[str, dict[float, float]] = defaultdict(dict)
    controls: dict[str, float] = {}
    varied = len({(r.n_train, r.victim.epochs) for r in results}) > 1
    for r in results:
        name = f"{r.victim.training_label}{' + aug' if r.victim.augment else ''}"
        if varied:  # several training scales in one figure: name them
            name += f" (n={r.n_train}, {r.victim.epochs} ep)"
        lines[name][0.0] = r.clean_trained_acc
        if r.cuda.same:
            controls[name] = r.poisoned_trained_acc
        else:
            lines[name][float(r.cuda.mix)] = r.poisoned_trained_acc
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, points in sorted(lines.items()):
        mixes = sorted(points)
        (line,) = ax.plot(mixes, [100 * points[m] for m in mixes], marker="o", label=name)
        if name in controls:  # the one-kernel control at mix 1, same colour, hollow marker
            ax.plot([1.0], [100 * controls[name]], marker="s", mfc="none", ms=9, color=line.get_color(),
                    label=f"{name}: one kernel")
    if results:
        ax.axhline(100 / max(1, _num_classes(results)), color="grey", ls=":", label="chance")
    ax.set_xlabel("poisoned fraction (mix)")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title(f"CUDA on {results[0].dataset if results else '?'}: victim trained on poisoned data")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def _num_classes(results: list[CudaEvalResult]) -> int:
    return int(results[0].extra.get("num_classes", 10))


def plot_image_grid(clean: DataSplit, poisoned: PoisonedImages, path: str | Path, per_class: int = 1) -> Path:
    """Rows: clean image, its CUDA-poisoned version, for the first ``per_class`` images of each class;
    the last row shows each class's private kernel."""
    idx = [int(i) for c in range(clean.num_classes)
           for i in (clean.y == c).nonzero().flatten()[:per_class]][:20]
    n = len(idx)
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n, 3.6), squeeze=False)
    for j, i in enumerate(idx):
        c = int(clean.y[i])
        for row, img in enumerate((clean.x[i], poisoned.x[i].float() / 255.0)):
            ax = axes[row][j]
            ax.imshow(_hwc(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([]); ax.set_yticks([])
        axes[0][j].set_title(clean.class_names[c][:8] if clean.class_names else str(c), fontsize=7)
        axes[2][j].imshow(poisoned.kernels[c].numpy(), cmap="viridis", vmin=0, vmax=1)
        axes[2][j].set_xticks([]); axes[2][j].set_yticks([])
    for row, label in enumerate(("clean", "CUDA", "kernel")):
        axes[row][0].set_ylabel(label, fontsize=8)
    return save_figure(fig, path, dpi=120)


def _hwc(img: torch.Tensor):
    img = img.detach().cpu().clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
