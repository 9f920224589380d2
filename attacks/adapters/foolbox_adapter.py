"""Adapter running Foolbox 3 attacks (FGSM, PGD, C&W, DeepFool, HopSkipJump, ...) as EvasionAttacks."""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from attacks.base import AttackError, AttackResult, EvasionAttack
from rbl_core.threat import ThreatModel

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which fails without git

# Native norm of each supported Foolbox class.
FOOLBOX_NATIVE_NORM: dict[str, str] = {
    "FGSM": "Linf", "LinfFastGradientAttack": "Linf", "L2FastGradientAttack": "L2",
    "LinfPGD": "Linf", "L2PGD": "L2", "LinfBasicIterativeAttack": "Linf", "L2BasicIterativeAttack": "L2",
    "LinfMomentumIterativeFastGradientMethod": "Linf", "L2MomentumIterativeFastGradientMethod": "L2",
    "L2CarliniWagnerAttack": "L2", "LinfDeepFoolAttack": "Linf", "L2DeepFoolAttack": "L2",
    "HopSkipJumpAttack": "L2", "BoundaryAttack": "L2", "L2FMNAttack": "L2", "LInfFMNAttack": "Linf",
    "DDNAttack": "L2", "SaltAndPepperNoiseAttack": "L2", "PointwiseAttack": "L0",
}
# Norm-generic names resolved by the threat model's norm.
FOOLBOX_ALIASES: dict[str, dict[str, str]] = {
    "FGM": {"Linf": "FGSM", "L2": "L2FastGradientAttack"},
    "PGD": {"Linf": "LinfPGD", "L2": "L2PGD"},
    "BasicIterative": {"Linf": "LinfBasicIterativeAttack", "L2": "L2BasicIterativeAttack"},
    "MIFGSM": {"Linf": "LinfMomentumIterativeFastGradientMethod", "L2": "L2MomentumIterativeFastGradientMethod"},
    "DeepFool": {"Linf": "LinfDeepFoolAttack", "L2": "L2DeepFoolAttack"},
    "FMN": {"Linf": "LInfFMNAttack", "L2": "L2FMNAttack"},
}
# Minimisation attacks find the smallest perturbation; in another norm they are projected onto its ball.
_MINIMIZATION = {"L2CarliniWagnerAttack", "LinfDeepFoolAttack", "L2DeepFoolAttack", "HopSkipJumpAttack",
                 "BoundaryAttack", "L2FMNAttack", "LInfFMNAttack", "DDNAttack", "SaltAndPepperNoiseAttack",
                 "PointwiseAttack"}
# Decision-based attacks query labels only; they are counted as black-box.
_BLACK_BOX = {"HopSkipJumpAttack", "BoundaryAttack", "SaltAndPepperNoiseAttack", "PointwiseAttack"}


def _import_foolbox() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.filters import inside foolbox
        import foolbox

    return foolbox


class _CountingModule(nn.Module):
    """Counts forward-pass examples so decision-based attacks report their queries."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.count += int(x.shape[0])
        return self.model(x)


class FoolboxAttack(EvasionAttack):
    """Any Foolbox attack by class name (or a norm-generic alias); keyword arguments pass straight to it."""

    def __init__(self, attack: str, name: str | None = None, **kwargs: Any) -> None:
        known = set(FOOLBOX_NATIVE_NORM) | set(FOOLBOX_ALIASES)
        if attack not in known:
            raise AttackError(f"unsupported Foolbox attack {attack!r}: choose one of {sorted(known)}")
        self.attack = attack
        self.kwargs = dict(kwargs)
        self.name = name or attack
        if attack in FOOLBOX_ALIASES:
            self.norms = tuple(FOOLBOX_ALIASES[attack])
        elif attack in _MINIMIZATION:
            self.norms = tuple(dict.fromkeys((FOOLBOX_NATIVE_NORM[attack], "Linf", "L2")))
        else:
            self.norms = (FOOLBOX_NATIVE_NORM[attack],)

    def resolve(self, threat: ThreatModel) -> str:
        """The concrete Foolbox class name used under ``threat``."""
        return FOOLBOX_ALIASES[self.attack][threat.norm.value] if self.attack in FOOLBOX_ALIASES else self.attack

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Run the attack; results in another norm than the attack's own are projected onto the threat ball."""
        self.check(x, y, threat)
        fb = _import_foolbox()
        cls_name = self.resolve(threat)
        attack = self._build(fb, cls_name, threat.norm.value)
        counter = _CountingModule(model).eval()
        fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device="cpu")
        native = FOOLBOX_NATIVE_NORM[cls_name] == threat.norm.value or cls_name == "HopSkipJumpAttack"
        if native:
            _, x_adv, success = attack(fmodel, x, y, epsilons=threat.eps)
        else:
            raw, _, success = attack(fmodel, x, y, epsilons=None)
            x_adv = threat.project(x, raw)
        queries = torch.full((x.shape[0],), counter.count // max(x.shape[0], 1), dtype=torch.long)
        return AttackResult(x_adv.detach(), success.detach(), queries=queries, distance=threat.distance(x, x_adv))

    def _build(self, fb: Any, cls_name: str, norm: str) -> Any:
        kwargs = dict(self.kwargs)
        if cls_name == "HopSkipJumpAttack":
            kwargs.setdefault("constraint", "linf" if norm == "Linf" else "l2")
        return getattr(fb.attacks, cls_name)(**kwargs)

    def at_epsilons(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                    epsilons: list[float]) -> list[torch.Tensor]:
        """Candidates at every budget in ``epsilons`` (norm ``norm``), in order, from one call where Foolbox allows.

        Foolbox takes the list itself: a minimisation attack runs once and its perturbation is clipped per budget,
        a fixed-budget attack runs once per budget. In a norm other than the attack's own, the one minimal
        perturbation is projected onto each ball. Candidates are not checked here; the caller re-measures them.
        """
        fb = _import_foolbox()
        threat = ThreatModel(norm, max(epsilons))
        self.check(x, y, threat)
        cls_name = self.resolve(threat)
        attack = self._build(fb, cls_name, norm)
        fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1), device="cpu")
        if FOOLBOX_NATIVE_NORM[cls_name] == norm or cls_name == "HopSkipJumpAttack":
            _, clipped, _ = attack(fmodel, x, y, epsilons=list(epsilons))
            return [c.detach() for c in clipped]
        raw, _, _ = attack(fmodel, x, y, epsilons=None)
        return [ThreatModel(norm, e).project(x, raw).detach() for e in epsilons]
