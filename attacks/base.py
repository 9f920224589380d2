"""Evasion-attack interface: a fixed template (as Foolbox 3's) around each attack's narrow ``run``."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence, final

import torch
from torch import nn

from rbl_core.threat import Norm, ThreatModel


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
    minimization: bool = False    # finds the smallest perturbation it can (DeepFool, C&W, JSMA, ...)
    default_budget: bool = False  # a fixed-eps attack with a budget of its own for threat.eps = None

    def check_threat(self, threat: ThreatModel) -> None:
        """Reject a threat model this attack cannot work in, with a clear message."""
        if threat.norm.value not in self.norms:
            raise AttackError(f"{self.name} supports norms {list(self.norms)}, not {threat.norm.value}")
        if threat.eps is None and not (self.minimization or self.default_budget):
            raise AttackError(f"{self.name} needs a bounded threat model (threat.eps)")

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Reject inputs this attack cannot take, with a clear message."""
        if x.ndim != 4:
            raise AttackError(f"{self.name}: inputs must be (N, C, H, W), got shape {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise AttackError(f"{self.name}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if x.min() < 0 or x.max() > 1:
            raise AttackError(f"{self.name}: inputs must lie in [0, 1], got [{float(x.min()):.3f}, {float(x.max()):.3f}]")

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Candidates for checked (x, y) and the attack's claim; a minimisation attack gets ``threat.eps = None``."""

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
        """``x_adv`` onto ``threat``'s ball and [0, 1]; L0 and L1 have no projection, the re-measurement judges."""
        return threat.project(x, x_adv) if threat.norm in (Norm.Linf, Norm.L2) else x_adv

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Attack ``model`` on (x, y) within ``threat``."""
        return self.at_epsilons(model, x, y, threat.norm.value, [threat.eps])[0]

    @final
    def at_epsilons(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                    epsilons: Sequence[float | None]) -> list[AttackResult]:
        """Inputs and threat checked once, ``run`` once per budget (a minimisation attack: once, unbounded), each
        result projected onto its eps ball and [0, 1] and packaged; in the order of ``epsilons``, never reseeded."""
        threats = [ThreatModel(norm, eps) for eps in epsilons]
        for threat in threats:
            self.check_threat(threat)
        self.check_inputs(x, y)
        if self.minimization:
            found = self.run(model, x, y, ThreatModel(norm))
            return [self._package(x, found, threat) for threat in threats]
        return [self._package(x, self.run(model, x, y, threat), threat) for threat in threats]

    def _package(self, x: torch.Tensor, found: AttackResult, threat: ThreatModel) -> AttackResult:
        inside = threat.contains(x, found.x_adv)
        x_adv = self.project(x, found.x_adv, threat)
        if not self.minimization:
            # Projection is the identity inside the ball, but x + (x_adv - x) can move x_adv by an ulp in float32.
            x_adv = torch.where(inside.view(-1, *[1] * (x.ndim - 1)), found.x_adv, x_adv)
        # A claim stands only for a candidate inside the ball before projection; the harness re-measures anyway.
        return AttackResult(x_adv.detach(), found.success & inside, found.queries, threat.distance(x, x_adv),
                            found.details)
