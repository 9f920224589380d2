"""The late-fusion classifier: two frozen feature extractors side by side and a linear head on their concatenation.

Input choice (documented in docs/contextual_fusion.md): both streams see the same composite image, as in the
paper's CIFAR-10 setting (the whole image feeds both streams). This keeps one input tensor, so every attack
(transferred, end-to-end, masked) and blur acts on exactly what both streams see.
"""
from __future__ import annotations

import torch
from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with every parameter frozen; returns it."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module.eval()


class FusionModel(nn.Module):
    """``head([fg_features(x); bg_features(x)])``; the extractors stay frozen and in eval mode."""

    def __init__(self, fg_features: nn.Module, bg_features: nn.Module, head: nn.Linear,
                 fg_dim: int | None = None) -> None:
        super().__init__()
        self.fg_features = freeze(fg_features)
        self.bg_features = freeze(bg_features)
        self.head = head
        # Width of the fg block: given, else the out_features of the extractor's last Linear layer.
        self._fg_dim = fg_dim if fg_dim is not None else _last_linear_width(fg_features)

    def train(self, mode: bool = True) -> FusionModel:
        """Only the head changes mode: the frozen extractors stay in eval."""
        super().train(mode)
        self.fg_features.eval()
        self.bg_features.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated (fg, bg) features of ``x``."""
        return torch.cat([self.fg_features(x), self.bg_features(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def fg_dim(self) -> int:
        """Width of the foreground feature block (the first columns of the head's weight)."""
        return int(self._fg_dim)

    def fg_weight(self) -> torch.Tensor:
        """The head's weights on the foreground features (theta_fg)."""
        return self.head.weight[:, :self.fg_dim]

    def bg_weight(self) -> torch.Tensor:
        """The head's weights on the background features."""
        return self.head.weight[:, self.fg_dim:]

    def fg_share(self) -> float:
        """||theta_fg|| / (||theta_fg|| + ||theta_bg||): how much of the head's weight norm sits on the foreground."""
        f, b = float(self.fg_weight().detach().norm()), float(self.bg_weight().detach().norm())
        return f / max(f + b, 1e-12)


def _last_linear_width(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("FusionModel: pass fg_dim, the extractor has no Linear layer to read it from")
    return int(linears[-1].out_features)


class LinearOnFeatures(nn.Module):
    """A frozen feature extractor followed by a linear head (the single-stream classifiers)."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = freeze(features)
        self.head = head

    def train(self, mode: bool = True) -> LinearOnFeatures:
        """Only the head changes mode."""
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
