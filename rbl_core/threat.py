"""Threat models: a norm and a budget, with the one place that measures, clips and projects."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class Norm(str, Enum):
    """Perturbation norms the suite knows."""

    Linf = "Linf"
    L2 = "L2"
    L1 = "L1"
    L0 = "L0"


class ThreatModelError(ValueError):
    """An invalid norm or budget."""


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


@dataclass(frozen=True)
class ThreatModel:
    """A norm ball of radius ``eps`` around each input, intersected with the [0, 1] box."""

    norm: Norm
    eps: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "norm", Norm(self.norm))
        except ValueError:
            raise ThreatModelError(f"unknown norm {self.norm!r}: choose one of {[n.value for n in Norm]}") from None
        if self.eps is not None:
            if not isinstance(self.eps, (int, float)) or self.eps != self.eps:
                raise ThreatModelError(f"threat.eps must be a number, got {self.eps!r}")
            if self.eps < 0:
                raise ThreatModelError(f"threat.eps must be >= 0, got {self.eps}")
            if self.norm == Norm.Linf and self.eps > 1:
                raise ThreatModelError(f"threat.eps={self.eps} exceeds 1, the whole [0, 1] pixel range, for Linf")
            object.__setattr__(self, "eps", float(self.eps))

    def __str__(self) -> str:
        return f"{self.norm.value}(eps={self.eps})"

    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-example size of the perturbation in this norm."""
        delta = _flat(x_adv.detach().float() - x.detach().float())
        if self.norm == Norm.Linf:
            return delta.abs().amax(dim=1)
        if self.norm == Norm.L2:
            return delta.norm(p=2, dim=1)
        if self.norm == Norm.L1:
            return delta.abs().sum(dim=1)
        # L0 counts changed pixels (any channel), as in the feature-guided game.
        changed = (x_adv.detach() - x.detach()).abs() > 1e-6
        return changed.any(dim=1).reshape(x.shape[0], -1).sum(dim=1).float() if x.ndim == 4 else changed.sum(dim=1).float()

    def contains(self, x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Whether each x_adv is finite, inside [0, 1] and within eps of x (re-measured, never trusted)."""
        finite = torch.isfinite(_flat(x_adv)).all(dim=1)
        in_box = ((_flat(x_adv) >= -tol) & (_flat(x_adv) <= 1 + tol)).all(dim=1)
        if self.eps is None:
            return finite & in_box
        dist = torch.nan_to_num(self.distance(x, x_adv), nan=float("inf"))
        return finite & in_box & (dist <= self.eps * (1 + tol) + tol)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Project x_adv onto the eps-ball around x and the [0, 1] box."""
        if self.eps is None:
            return x_adv.clamp(0, 1)
        delta = x_adv - x
        if self.norm == Norm.Linf:
            delta = delta.clamp(-self.eps, self.eps)
        elif self.norm == Norm.L2:
            norms = _flat(delta).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (delta.ndim - 1)))
        else:
            raise ThreatModelError(f"projection onto an {self.norm.value} ball is not supported")
        return (x + delta).clamp(0, 1)
