"""Training the heads on two frozen streams: the fusion head with CE + alpha * ||theta_fg||^2 and the bg-only head.

The streams themselves are ordinary ``cnn_small`` classifiers trained by the harness's zoo (``fusion_fg``,
``fusion_bg``); ``split_classifier`` cuts one into (features, head). Stream training sets (deviation from "isolated views", see docs/contextual_fusion.md): the foreground stream
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

from defenses.contextual_fusion.model import FusionModel, LinearOnFeatures
from rbl_core.training import fit, make_optimizer


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


@torch.no_grad()
def frozen_features(extractor: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``extractor(x)`` in batches, without gradients."""
    return torch.cat([extractor(chunk) for chunk in x.split(batch_size)])


def train_linear(features: torch.Tensor, y: torch.Tensor, *, num_classes: int = 10, alpha: float = 0.0,
                 penalised: int = 0, steps: int = 300, lr: float = 0.05, seed: int = 0) -> nn.Linear:
    """Full-batch Adam on CE + alpha * ||W[:, :penalised]||^2 (the fusion regulariser on theta_fg)."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes)

    def loss(batch: tuple[torch.Tensor, torch.Tensor], _step: int) -> torch.Tensor:
        value = F.cross_entropy(head(batch[0]), batch[1])
        return value + alpha * head.weight[:, :penalised].pow(2).sum() if alpha > 0 and penalised > 0 else value

    # Full batch: an epoch is one step.
    fit(head, make_optimizer(head.parameters(), lr=lr), lambda _: [(features, y)], loss, epochs=range(steps))
    return head


def fusion_features(streams: Streams, x: torch.Tensor) -> torch.Tensor:
    """Frozen (fg, bg) features of ``x``, computed once and shared by every head trained on them."""
    return torch.cat([frozen_features(streams.fg.features, x), frozen_features(streams.bg.features, x)], dim=1)


def train_fusion(streams: Streams, x: torch.Tensor, y: torch.Tensor, *, alpha: float, seed: int,
                 steps: int = 300) -> FusionModel:
    """The joint head on frozen (fg, bg) features of composites ``x`` (labels ``y``); alpha penalises theta_fg."""
    head = train_linear(fusion_features(streams, x), y, alpha=alpha, penalised=streams.fg_dim, steps=steps, seed=seed)
    return FusionModel(streams.fg.features, streams.bg.features, head, fg_dim=streams.fg_dim).eval()


def train_bg_only(bg: LinearOnFeatures, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                  steps: int = 300) -> LinearOnFeatures:
    """The background-only digit classifier: a linear head on the frozen scene features of stream ``bg``."""
    head = train_linear(frozen_features(bg.features, x), y, steps=steps, seed=seed)
    return LinearOnFeatures(bg.features, head).eval()


__all__ = ["Streams", "frozen_features", "fusion_features", "split_classifier", "train_bg_only", "train_fusion",
           "train_linear"]
