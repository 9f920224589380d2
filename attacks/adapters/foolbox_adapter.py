"""Adapter running Foolbox 3 attacks (FGSM, PGD, C&W, DeepFool, HopSkipJump, ...) as EvasionAttacks."""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from attacks.base import AttackError, AttackResult, EvasionAttack
from rbl_core.threat import Norm, ThreatModel

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
        self.minimization = all(c in _MINIMIZATION for c in FOOLBOX_ALIASES.get(attack, {"": attack}).values())
        if attack in FOOLBOX_ALIASES:
            self.norms = tuple(FOOLBOX_ALIASES[attack])
        else:  # a minimisation attack runs in the other norms too, its minimal perturbation projected there
            other = ("Linf", "L2") if self.minimization else ()
            self.norms = tuple(dict.fromkeys((FOOLBOX_NATIVE_NORM[attack], *other)))

    def resolve(self, threat: ThreatModel) -> str:
        """The concrete Foolbox class name used under ``threat``."""
        return FOOLBOX_ALIASES[self.attack][threat.norm.value] if self.attack in FOOLBOX_ALIASES else self.attack

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """One Foolbox call: clipped to ``threat.eps`` by Foolbox (fixed-eps attacks) or unbounded (minimisation)."""
        fb, cls_name = _import_foolbox(), self.resolve(threat)
        kwargs = {"constraint": "linf" if threat.norm == Norm.Linf else "l2"} if cls_name == "HopSkipJumpAttack" else {}
        counter = _CountingModule(model).eval()
        # The inputs' device: Foolbox's own default would pick cuda:0 whenever CUDA exists, whatever the run chose.
        fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=x.device)
        attack = getattr(fb.attacks, cls_name)(**{**kwargs, **self.kwargs})
        _, x_adv, success = attack(fmodel, x, y, epsilons=threat.eps)
        queries = torch.full((x.shape[0],), counter.count // max(x.shape[0], 1), dtype=torch.long, device=x.device)
        return AttackResult(x_adv, success, queries=queries)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
        """In the attack's own Linf or L2 norm, Foolbox's clip_perturbation (its float ops differ from the threat's)."""
        cls_name = self.resolve(threat)
        own = FOOLBOX_NATIVE_NORM[cls_name] == threat.norm.value or cls_name == "HopSkipJumpAttack"
        if threat.eps is None or threat.norm == Norm.L0 or not own:
            return super().project(x, x_adv, threat)  # in another norm the minimal perturbation is projected
        return getattr(_import_foolbox().distances, threat.norm.value.lower()).clip_perturbation(x, x_adv, threat.eps)
