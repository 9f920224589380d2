"""A preprocessing defense as one module: ``model(transform(x))``, labelled with how to attack it adaptively.

``adaptive`` names the strongest white-box attack the wrapper admits, stated on every result row:
* ``e2e``: every stage is differentiable, attacks take gradients through the whole wrapper;
* ``bpda``: some stage is not differentiable; its backward is the identity (straight-through BPDA), so
  the same end-to-end attack uses that approximation;
* ``eot``: some stage is random; attacks average gradients over several draws (Expectation over Transformation).
"""
from __future__ import annotations

import torch
from torch import nn

ADAPTIVE_MODES = ("e2e", "bpda", "eot")


class DefenseError(ValueError):
    """A defense given input it cannot take (wrong channel count, parameter out of range)."""


class Preprocessed(nn.Module):
    """``model(transform(x))`` for images in [0, 1]; ``transform.adaptive`` says how to attack it."""

    def __init__(self, model: nn.Module, transform: nn.Module, name: str) -> None:
        super().__init__()
        mode = getattr(transform, "adaptive", None)
        if mode not in ADAPTIVE_MODES:
            raise DefenseError(f"transform {type(transform).__name__} must set adaptive to one of {ADAPTIVE_MODES}")
        self.model, self.transform, self.name, self.adaptive = model, transform, name, mode
        self.channels = getattr(transform, "channels", None)   # None: any channel count
        self.eval()   # a defense is evaluated, never trained, through this wrapper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped classifier on the transformed images."""
        if self.channels is not None and x.shape[1] != self.channels:
            raise DefenseError(f"defense {self.name} needs {self.channels}-channel (RGB) images, "
                               f"got {x.shape[1]} channel(s)")
        return self.model(self.transform(x))
