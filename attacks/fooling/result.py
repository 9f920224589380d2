"""Result record shared by the fooling-image searches (MAP-Elites and gradient ascent).

Per class it keeps the best image found, its confidence, and the first evaluation count, wall time
and step (generation or gradient iteration) at which the best confidence crossed each threshold.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from attacks.base import AttackError

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.99, 0.999, 0.9999)


class ThresholdTracker:
    """Records, per class, when the running best confidence first reaches each threshold."""

    def __init__(self, num_classes: int, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS):
        if num_classes < 1:
            raise AttackError(f"num_classes must be >= 1, got {num_classes}")
        if any(not 0.0 < t <= 1.0 for t in thresholds):
            raise AttackError(f"thresholds must lie in (0, 1], got {thresholds}")
        self.thresholds = tuple(float(t) for t in thresholds)
        shape = (num_classes, len(self.thresholds))
        self.first_evaluation = np.full(shape, -1, dtype=np.int64)
        self.first_step = np.full(shape, -1, dtype=np.int64)
        self.first_time = np.full(shape, math.nan, dtype=np.float64)
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the tracker was created (the search's wall clock)."""
        return time.perf_counter() - self._start

    def update(self, best_confidence: np.ndarray, evaluations: np.ndarray | int, step: int) -> None:
        """Mark thresholds newly reached; `evaluations` is a scalar or one count per class."""
        best = np.asarray(best_confidence, dtype=np.float64)[:, None]
        evals = np.broadcast_to(np.asarray(evaluations, dtype=np.int64), (best.shape[0],))[:, None]
        newly = (best >= np.asarray(self.thresholds)[None, :]) & (self.first_evaluation < 0)
        if newly.any():
            now = self.elapsed()
            self.first_evaluation[newly] = np.broadcast_to(evals, newly.shape)[newly]
            self.first_step[newly] = step
            self.first_time[newly] = now

    def all_reached(self, threshold: float) -> bool:
        """True once every class has reached `threshold` (must be one of the tracked thresholds)."""
        if threshold not in self.thresholds:
            raise AttackError(f"threshold {threshold} is not tracked ({self.thresholds})")
        return bool((self.first_evaluation[:, self.thresholds.index(threshold)] >= 0).all())


@dataclass
class FoolingResult:
    """Best fooling image per class with its confidence and the cost of reaching each threshold."""

    method: str
    images: torch.Tensor            # (C, ch, H, W) best image per target class, in [0, 1]
    confidence: torch.Tensor        # (C,) softmax probability of the target class for that image
    predicted: torch.Tensor         # (C,) argmax label of that image
    evaluations: int                # total model evaluations (queries) spent
    steps: int                      # generations or gradient iterations run
    time_s: float
    thresholds: tuple[float, ...]
    first_evaluation: np.ndarray    # (C, T) int, -1 = never reached
    first_step: np.ndarray          # (C, T) int, -1 = never reached
    first_time: np.ndarray          # (C, T) float seconds, nan = never reached
    classes: tuple[int, ...] = ()   # target class of each row (defaults to 0..C-1)
    history: list[dict] = field(default_factory=list)
    genomes: list | None = None     # encoding-specific genome of each best image (evolution only)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = tuple(range(self.confidence.shape[0]))

    def reached(self, threshold: float) -> np.ndarray:
        """Bool per class: best confidence >= threshold."""
        return self.confidence.detach().cpu().numpy() >= threshold

    def to_metrics(self) -> dict:
        """JSON-serialisable summary: per-class lists plus aggregate numbers."""
        conf = self.confidence.detach().cpu().double().numpy()
        metrics: dict = {
            "classes": list(self.classes),
            "confidence": [float(c) for c in conf],
            "predicted": [int(p) for p in self.predicted.cpu()],
            "min_confidence": float(conf.min()),
            "median_confidence": float(np.median(conf)),
            "mean_confidence": float(conf.mean()),
            "evaluations": int(self.evaluations),
            "steps": int(self.steps),
            "time_s": float(self.time_s),
        }
        for j, t in enumerate(self.thresholds):
            key = f"{t:g}"
            metrics[f"classes_at_{key}"] = int((conf >= t).sum())
            metrics[f"evaluations_to_{key}"] = [int(v) for v in self.first_evaluation[:, j]]
            metrics[f"steps_to_{key}"] = [int(v) for v in self.first_step[:, j]]
            metrics[f"time_to_{key}"] = [None if math.isnan(v) else round(float(v), 4)
                                         for v in self.first_time[:, j]]
        for k, v in self.extra.items():
            metrics[k] = v
        return metrics


def nearest_same_class_distance(images: torch.Tensor, classes: tuple[int, ...] | list[int],
                                data_x: torch.Tensor, data_y: torch.Tensor) -> list[float]:
    """L2 distance from each fooling image to the nearest real image of its target class."""
    if images.shape[1:] != data_x.shape[1:]:
        raise AttackError(f"images have shape {tuple(images.shape[1:])}, data {tuple(data_x.shape[1:])}")
    out = []
    for img, c in zip(images, classes):
        real = data_x[data_y == int(c)]
        if len(real) == 0:
            raise AttackError(f"no real image of class {c} to compare with")
        out.append(float((real.flatten(1) - img.flatten()).norm(dim=1).min()))
    return out


def real_nearest_neighbour_distance(data_x: torch.Tensor, data_y: torch.Tensor, num_classes: int) -> list[float]:
    """Per class, the median L2 distance from a real image to its nearest other real image of that class."""
    out = []
    for c in range(num_classes):
        flat = data_x[data_y == c].flatten(1)
        if len(flat) < 2:
            out.append(math.nan)
            continue
        d = torch.cdist(flat, flat)
        d.fill_diagonal_(math.inf)
        out.append(float(d.min(dim=1).values.median()))
    return out
