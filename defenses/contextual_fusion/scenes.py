"""A seeded "object on scene" data set: real MNIST digits composited onto 10 procedural texture classes.

Stands in for COCO objects on Places scenes (seeds.md section 7 (d)). Each image gets a digit (the object,
label ``y``) and a texture (the scene, label ``scene``). The scene class equals the digit label with
probability ``p``, else it is uniform over the other nine classes, so ``p = 0.1`` makes scene and label
independent (chance, the negative control) and ``p = 1`` makes the scene a perfect cue. ``p`` may also be
given per digit class, to vary context variability between classes.

Compositing uses the digit intensity as alpha: ``composite = a * 1 + (1 - a) * texture``, i.e. a white
digit over the scene. Every texture gets a random phase (shift), a random contrast and a random mean level,
so the scene must be recognised by its structure, not by a fixed pixel pattern.
All tensors are grey 1 x 28 x 28 in [0, 1] (NCHW).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rbl_core.data import DataSplit

NUM_SCENES = 10
SCENE_NAMES = ("h-stripes", "v-stripes", "diag-stripes", "anti-diag-stripes", "checkerboard", "dots",
               "h-gradient", "v-gradient", "rings", "egg-crate")
MASK_THRESHOLD = 0.1   # digit intensity above which a pixel belongs to the foreground mask


@dataclass(frozen=True)
class Scenes:
    """The views of one composited set (all N x 1 x H x W in [0, 1]) and both label sets."""

    foreground: torch.Tensor   # the digit on a neutral (black) background: the MNIST image itself
    background: torch.Tensor   # the scene without the digit
    composite: torch.Tensor    # digit over scene: what the models see
    mask: torch.Tensor         # 1 where the digit is (intensity > MASK_THRESHOLD), else 0
    y: torch.Tensor            # digit label
    scene: torch.Tensor        # texture class
    p: float | tuple[float, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int | None) -> Scenes:
        """The first ``n`` images of every view (all of them for ``None``)."""
        if n is None or n >= len(self):
            return self
        return Scenes(self.foreground[:n], self.background[:n], self.composite[:n], self.mask[:n], self.y[:n],
                      self.scene[:n], self.p)

    def split(self, view: str = "composite", labels: str = "y", name: str = "scenes") -> DataSplit:
        """One view with one label set as a ``DataSplit`` (for ``rbl_core.training.train_classifier``)."""
        x = getattr(self, view)
        lab = getattr(self, labels)
        names = tuple(str(i) for i in range(10)) if labels == "y" else SCENE_NAMES
        return DataSplit(x, lab, 10, f"{name}-{view}-{labels}", "train", names)


def texture(cls: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random instance (size x size in [0, 1]) of texture class ``cls``: random phase, contrast and level."""
    u = torch.rand(4, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    phase = float(u[0]) * 2 * math.pi
    period = 10.0 + 4.0 * float(u[1])   # 10..14 px: coarse enough to survive blur up to sigma ~2
    w = 2 * math.pi / period
    if cls == 0:
        t = torch.sin(w * yy + phase)
    elif cls == 1:
        t = torch.sin(w * xx + phase)
    elif cls == 2:
        t = torch.sin(w * (xx + yy) / math.sqrt(2) + phase)
    elif cls == 3:
        t = torch.sin(w * (xx - yy) / math.sqrt(2) + phase)
    elif cls == 4:
        t = torch.sign(torch.sin(w * xx + phase) * torch.sin(w * yy + 2 * phase))
    elif cls == 5:   # bright dots on a dark grid
        d = torch.cos(w * xx + phase) * torch.cos(w * yy + 2 * phase)
        t = (d > 0.6).float() * 2 - 1
    elif cls == 6:
        t = (xx / (size - 1)) * 2 - 1
        t = t if float(u[2]) < 0.5 else -t
    elif cls == 7:
        t = (yy / (size - 1)) * 2 - 1
        t = t if float(u[2]) < 0.5 else -t
    elif cls == 8:   # rings around a random centre
        cy, cx = (torch.rand(2, generator=gen) * size).tolist()
        t = torch.sin(w * torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) + phase)
    elif cls == 9:   # low-frequency egg crate (period 1.5x the stripes)
        t = torch.sin(w / 1.5 * xx + phase) * torch.sin(w / 1.5 * yy + 2 * phase)
    else:
        raise ValueError(f"texture class must be in 0..{NUM_SCENES - 1}, got {cls}")
    contrast = 0.3 + 0.1 * float(u[3])          # amplitude 0.3..0.4
    level = 0.4 + 0.1 * float(u[2])             # mean 0.4..0.5, max 0.9: the white digit stays visible
    return (level + contrast * t).clamp(0, 1)


def class_probabilities(p: float | Sequence[float]) -> torch.Tensor:
    """``p`` as one probability per digit class: a float for every class, or a per-class sequence of 10."""
    probs = torch.full((NUM_SCENES,), float(p)) if isinstance(p, (int, float)) else torch.tensor([float(v) for v in p])
    if probs.shape != (NUM_SCENES,):
        raise ValueError(f"p must be one probability or {NUM_SCENES} per-class ones, got {len(probs)}")
    if bool((probs < 0).any() or (probs > 1).any()):
        raise ValueError(f"p must lie in [0, 1], got {probs.tolist()}")
    return probs


def scene_labels(y: torch.Tensor, p: float | Sequence[float], gen: torch.Generator) -> torch.Tensor:
    """Scene class per image: ``y`` with probability ``p`` (of its class), else uniform over the other nine."""
    probs = class_probabilities(p)
    same = torch.rand(len(y), generator=gen) < probs[y]
    other = (y + 1 + torch.randint(0, NUM_SCENES - 1, (len(y),), generator=gen)) % NUM_SCENES
    return torch.where(same, y, other)


def make_scenes(digits: DataSplit, p: float | Sequence[float], seed: int) -> Scenes:
    """Composite every digit of ``digits`` (grey, square) onto a scene correlated with its label by ``p``.

    ``p`` is one probability for every class, or one per class (classes with a higher p have a less variable
    context: the per-class gain study).
    """
    if digits.x.shape[1] != 1:
        raise ValueError(f"make_scenes needs grey digits (N, 1, H, W), got {tuple(digits.x.shape)}")
    gen = torch.Generator().manual_seed(seed)
    size = digits.x.shape[-1]
    scene = scene_labels(digits.y, p, gen)
    bg = torch.stack([texture(int(c), size, gen) for c in scene]).unsqueeze(1)
    a = digits.x.clamp(0, 1)
    composite = a + (1 - a) * bg
    mask = (a > MASK_THRESHOLD).float()
    return Scenes(foreground=a, background=bg, composite=composite, mask=mask, y=digits.y.clone(), scene=scene,
                  p=p if isinstance(p, (int, float)) else tuple(float(v) for v in p))
