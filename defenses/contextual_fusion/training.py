"""Training: the two streams (object and scene classifiers), then the fusion head with CE + alpha * ||theta_fg||^2.

Stream training sets (deviation from "isolated views", see docs/contextual_fusion.md): the foreground stream
learns the digit from composites whose scene is independent of the label (p = chance), the background stream
learns the scene class from composites whose digit is independent of the scene. Each stream thus sees the same
kind of image it sees at test time (both streams read the composite) while learning only its own factor, the
roles ImageNet (objects in varied scenes) and Places (scenes with varied objects) play in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from defenses.contextual_fusion.model import (
    FusionModel,
    LinearOnFeatures,
    freeze,
    fusion_model,
)
from defenses.contextual_fusion.scenes import Scenes
from rbl_core.architectures import build
from rbl_core.data import DataSplit
from rbl_core.training import deterministic_training, train_classifier


@dataclass
class Streams:
    """The two pretrained, frozen streams as (features, own head) pairs."""

    fg: LinearOnFeatures   # digit classifier (the "known adversary" attacks this one)
    bg: LinearOnFeatures   # scene classifier

    @property
    def fg_dim(self) -> int:
        """Width of the foreground features."""
        return int(self.fg.head.in_features)

    @property
    def bg_dim(self) -> int:
        """Width of the background features."""
        return int(self.bg.head.in_features)


def split_classifier(model: nn.Sequential) -> LinearOnFeatures:
    """A trained ``cnn_small`` as (penultimate features, last Linear layer)."""
    layers = list(model)
    if not isinstance(layers[-1], nn.Linear):
        raise TypeError("split_classifier: the last layer must be nn.Linear")
    return LinearOnFeatures(nn.Sequential(*layers[:-1]), layers[-1])


def train_stream(train: DataSplit, *, epochs: int, seed: int, lr: float = 3e-3,
                 batch_size: int = 128, arch: str = "cnn_small") -> LinearOnFeatures:
    """Train an ``arch`` classifier on a DataSplit with ``rbl_core.training.train_classifier``; frozen."""
    torch.manual_seed(seed)
    model = build(arch, train.input_shape, train.num_classes)
    train_classifier(model, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False)
    return freeze(split_classifier(model))


def train_streams(fg_train: Scenes, bg_train: Scenes, *, epochs: int, seed: int) -> Streams:
    """The digit stream on ``fg_train`` (label y) and the scene stream on ``bg_train`` (label scene)."""
    fg = train_stream(fg_train.split("composite", "y", "fg"), epochs=epochs, seed=seed)
    bg = train_stream(bg_train.split("composite", "scene", "bg"), epochs=epochs, seed=seed + 1)
    return Streams(fg, bg)


@torch.no_grad()
def _features(extractor: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([extractor(chunk) for chunk in x.split(batch_size)])


def train_linear(features: torch.Tensor, y: torch.Tensor, *, num_classes: int = 10, alpha: float = 0.0,
                 penalised: int = 0, steps: int = 300, lr: float = 0.05, seed: int = 0) -> nn.Linear:
    """Full-batch Adam on CE + alpha * ||W[:, :penalised]||^2 (the fusion regulariser on theta_fg)."""
    with deterministic_training():
        torch.manual_seed(seed)
        head = nn.Linear(features.shape[1], num_classes)
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        for _ in range(steps):
            loss = F.cross_entropy(head(features), y)
            if alpha > 0 and penalised > 0:
                loss = loss + alpha * head.weight[:, :penalised].pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


def fusion_features(streams: Streams, x: torch.Tensor) -> torch.Tensor:
    """Frozen (fg, bg) features of ``x``, computed once and shared by every head trained on them."""
    return torch.cat([_features(streams.fg.features, x), _features(streams.bg.features, x)], dim=1)


def train_fusion(streams: Streams, train: Scenes, *, alpha: float, seed: int, steps: int = 300,
                 feats: torch.Tensor | None = None) -> FusionModel:
    """The joint head on frozen (fg, bg) features of ``train``'s composites; alpha penalises theta_fg."""
    feats = fusion_features(streams, train.composite) if feats is None else feats
    head = train_linear(feats, train.y, alpha=alpha, penalised=streams.fg_dim, steps=steps, seed=seed)
    return FusionModel(streams.fg.features, streams.bg.features, head, fg_dim=streams.fg_dim).eval()


def train_bg_only(streams: Streams, train: Scenes, *, seed: int, steps: int = 300,
                  feats: torch.Tensor | None = None) -> LinearOnFeatures:
    """The background-only digit classifier: a linear head on frozen scene features (the paper's third model).

    ``feats``: the fusion features of ``train`` if already computed (their bg block is used).
    """
    bg = _features(streams.bg.features, train.composite) if feats is None else feats[:, streams.fg_dim:]
    head = train_linear(bg, train.y, steps=steps, seed=seed)
    return LinearOnFeatures(streams.bg.features, head).eval()


__all__ = ["Streams", "fusion_features", "fusion_model", "split_classifier", "train_bg_only", "train_fusion", "train_linear",
           "train_stream", "train_streams"]
