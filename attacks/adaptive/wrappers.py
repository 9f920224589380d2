"""Attack wrappers that change what an attack sees, never how the harness measures the result.

* :class:`Unaware`: the inner attack crafts on the bare classifier; the harness then re-measures the
  examples on the defended model (a defense-unaware, transferred attack).
* :class:`EOT`: the inner attack sees the model's logits averaged over ``samples`` forward passes, so
  its gradient is the expectation over a random defense's draws (Athalye et al. 2018).
Both keep the stateless ``EvasionAttack`` contract; the adversarial examples are re-measured as usual.
"""
from __future__ import annotations

import torch
from torch import nn

from attacks.base import AttackError, AttackResult, EvasionAttack
from rbl_core.threat import ThreatModel


class _Wrapper(EvasionAttack):
    """``inner`` run against another model; its name, norms, kind and projection carry over."""

    def __init__(self, inner: EvasionAttack) -> None:
        self.inner, self.name, self.norms = inner, inner.name, inner.norms
        self.minimization, self.default_budget = inner.minimization, inner.default_budget

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
        """The inner attack's projection."""
        return self.inner.project(x, x_adv, threat)


class Unaware(_Wrapper):
    """``inner`` run against ``bare`` (the undefended classifier), whatever model it is handed."""

    def __init__(self, inner: EvasionAttack, bare: nn.Module) -> None:
        super().__init__(inner)
        self.bare = bare.eval()

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Craft on the bare classifier; success is left to the harness's re-measurement on ``model``."""
        return self.inner.run(self.bare, x, y, threat)


class MeanLogits(nn.Module):
    """Logits of ``model`` averaged over ``samples`` calls (each call draws the model's randomness anew)."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``samples`` forward passes."""
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)


class EOT(_Wrapper):
    """``inner`` run against the ``samples``-draw average of a random model (Expectation over Transformation)."""

    def __init__(self, inner: EvasionAttack, samples: int = 8) -> None:
        if samples < 1:
            raise AttackError(f"EOT needs samples >= 1, got {samples}")
        super().__init__(inner)
        self.samples = samples

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Attack the averaged model; the harness re-measures on ``model`` itself."""
        return self.inner.run(MeanLogits(model, self.samples).eval(), x, y, threat)
