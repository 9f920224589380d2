"""Evasion-attack interface: stateless callables returning a small typed result."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from rbl_core.threat import ThreatModel


class AttackError(ValueError):
    """An attack asked to do something it cannot (wrong norm, bad input)."""


@dataclass
class AttackResult:
    """Adversarial candidates for a batch; the harness re-measures success and distance itself."""

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor | None = None
    distance: torch.Tensor | None = None
    # Per-example records an attack may return for figures and reports (search traces, features).
    # Returned, never kept on the attack, so a call is safe in any process; success is never read from them.
    details: list | None = None


class EvasionAttack(ABC):
    """An attack that perturbs inputs to change a classifier's decision within a threat model."""

    name: str = "attack"
    norms: tuple[str, ...] = ("Linf", "L2")

    def check_threat(self, threat: ThreatModel) -> None:
        """Reject a threat model this attack cannot work in, with a clear message."""
        if threat.norm.value not in self.norms:
            raise AttackError(f"{self.name} supports norms {list(self.norms)}, not {threat.norm.value}")

    def check(self, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> None:
        """Reject inputs and threat models this attack cannot take, with a clear message."""
        self.check_threat(threat)
        if x.ndim != 4:
            raise AttackError(f"{self.name}: inputs must be (N, C, H, W), got shape {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise AttackError(f"{self.name}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if x.min() < 0 or x.max() > 1:
            raise AttackError(f"{self.name}: inputs must lie in [0, 1], got [{float(x.min()):.3f}, {float(x.max()):.3f}]")

    @abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Attack ``model`` on (x, y) within ``threat``."""
