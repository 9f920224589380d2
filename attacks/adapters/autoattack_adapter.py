"""Adapter running AutoAttack (pyautoattack) standard or custom attack sets as an EvasionAttack."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from attacks.base import AttackError, AttackResult, EvasionAttack
from rbl_core.threat import ThreatModel

AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def _reset_dynamic_check() -> None:
    # pyautoattack's check_dynamic keeps a module-global call counter that is never reset, so one
    # dynamic model would flag every later model in the process as dynamic.
    from pyautoattack import checks

    for key in list(getattr(checks, "funcs", {})):
        checks.funcs[key] = 0


def _set_iterations(apgd: object, n_iter: int) -> None:
    # APGD derives its step-size checkpoints from n_iter in __init__, so they are set again with it.
    apgd.n_iter = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


class AutoAttackAdapter(EvasionAttack):
    """AutoAttack (Croce & Hein 2020): ``version="standard"`` or a custom list of its attacks."""

    norms = ("Linf", "L2", "L1")

    def __init__(self, version: str = "standard", attacks: Sequence[str] | None = None, seed: int = 0,
                 batch_size: int = 500, name: str | None = None, n_iter: int | None = None) -> None:
        if version not in ("standard", "plus", "rand", "custom"):
            raise AttackError(f"unknown AutoAttack version {version!r}: choose standard, plus, rand or custom")
        if version == "custom":
            if not attacks:
                raise AttackError("AutoAttack version 'custom' needs a non-empty attacks list, e.g. ['apgd-ce']")
            unknown = set(attacks) - set(AA_ATTACKS)
            if unknown:
                raise AttackError(f"unknown AutoAttack attacks {sorted(unknown)}: choose from {list(AA_ATTACKS)}")
        elif attacks:
            raise AttackError(f"AutoAttack version {version!r} fixes its attacks; use version='custom' to choose")
        if n_iter is not None and (version != "custom" or n_iter < 1):
            raise AttackError(f"AutoAttack n_iter must be >= 1 and needs version 'custom', got {n_iter} ({version})")
        self.version = version
        self.n_iter = n_iter   # APGD iterations per restart (None: the reference 100)
        self.attacks = list(attacks) if attacks else None
        self.seed = seed
        self.batch_size = batch_size
        self.name = name or (f"autoattack_{version}" if version != "custom" else "aa_" + "+".join(self.attacks or []))

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Run AutoAttack on (x, y); its own per-example early stopping keeps already-broken points."""
        from pyautoattack import AutoAttack

        _reset_dynamic_check()
        adversary = AutoAttack(model, norm=threat.norm.value, eps=threat.eps, version=self.version,
                               attacks=self.attacks, seed=self.seed, device=x.device)
        if self.version == "custom":
            # Plain custom runs keep the reference settings of the standard version for each attack.
            adversary.apgd.n_restarts = 1
            adversary.fab.n_restarts = 1
            adversary.apgd_targeted.n_restarts = 1
            adversary.apgd_targeted.n_target_classes = 9
            adversary.fab.n_target_classes = 9
            adversary.square.n_queries = 5000
            if self.n_iter is not None:
                for apgd in (adversary.apgd, adversary.apgd_targeted):
                    _set_iterations(apgd, self.n_iter)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=self.batch_size)
        with torch.no_grad():
            return AttackResult(x_adv, model(x_adv).argmax(dim=1) != y)
