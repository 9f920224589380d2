"""The one re-measurement of adversarial examples: every path that accepts one goes through ``remeasure``.

An attack's (or a verifier's) own success claim is never trusted. A candidate counts only if it is
finite, lies in [0, 1], lies inside the threat model's ball by the harness's own norm, and a fresh
forward pass of the model misclassifies it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rbl_core.threat import ThreatModel


@dataclass(frozen=True)
class Remeasured:
    """Per-example verdicts on candidates ``x_adv`` for clean inputs ``x``."""

    success: torch.Tensor    # bool: inside and fooled
    inside: torch.Tensor     # bool: finite, in [0, 1], within the threat model's budget
    fooled: torch.Tensor     # bool: the model's fresh prediction differs from the label
    distance: torch.Tensor   # float: the threat model's norm of x_adv - x

    @property
    def rejected(self) -> int:
        """Candidates that left the threat model or the image range, or were not finite."""
        return int((~self.inside).sum())


@torch.no_grad()
def remeasure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, threat: ThreatModel,
              batch_size: int = 512, tol: float = 1e-5) -> Remeasured:
    """Check candidates ``x_adv`` against ``model``, labels ``y`` and ``threat``; see the module docstring."""
    if x_adv.shape != x.shape:
        raise ValueError(f"adversarial candidates have shape {tuple(x_adv.shape)}, inputs {tuple(x.shape)}")
    x_adv = torch.nan_to_num(x_adv.detach().to(x.dtype), nan=-1.0)  # a NaN row fails the range check
    inside = threat.contains(x, x_adv, tol=tol)
    probe = x_adv.clamp(0, 1)
    pred = torch.cat([model(chunk).argmax(dim=1) for chunk in probe.split(batch_size)]) if len(probe) else y
    fooled = pred != y
    return Remeasured(success=inside & fooled, inside=inside, fooled=fooled, distance=threat.distance(x, x_adv))
