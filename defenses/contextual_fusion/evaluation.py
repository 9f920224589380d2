"""Evaluation of fg-only, bg-only and fused classifiers: transferred and end-to-end Linf attacks, and Gaussian blur.

Threats (seeds.md section 7 (e) asks to state them), each run with every given attack (Foolbox FGSM / PGD,
AutoAttack: any :class:`attacks.base.EvasionAttack`):
* ``transfer-from-fg``: crafted on the foreground classifier over the whole image (the "known adversary" of
  the object classifier), then applied unchanged to every model;
* ``e2e-fg-region``: crafted against the fused model itself, perturbing only pixels inside the digit mask
  (:class:`defenses.contextual_fusion.region.RegionRestricted`);
* ``e2e-whole``: crafted against the fused model over the whole image (the attacker may change the scene too);
* ``blur``: kornia's Gaussian blur of standard deviation sigma (not a norm ball; no re-measurement applies).
Every adversarial batch goes through ``rbl_core.remeasure.remeasure`` against the model it is scored on, and the
accuracy reported is the share of re-measured, in-budget candidates that the model still classifies right.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import kornia
import torch
from torch import nn

from attacks.base import EvasionAttack
from defenses.contextual_fusion.region import RegionRestricted
from rbl_core.remeasure import remeasure
from rbl_core.threat import ThreatModel


def robust_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   eps: float) -> torch.Tensor:
    """Per example: ``model`` is right on the re-measured candidate; raises if any candidate left the Linf ball."""
    verdict = remeasure(model, x, y, x_adv, ThreatModel("Linf", float(eps)))
    if verdict.rejected:
        raise RuntimeError(f"{verdict.rejected} adversarial candidates left the Linf ball of eps={eps} or [0, 1]")
    return ~verdict.fooled


def outside_mask_change(x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor) -> float:
    """The largest absolute change of any pixel outside ``mask`` (0 for a correctly masked attack)."""
    return float(((x_adv - x) * (1 - mask)).abs().max()) if len(x) else 0.0


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """kornia's Gaussian blur over radius ceil(3 sigma) with reflect padding, clipped to [0, 1]; sigma 0 = identity."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    # Reflect padding needs a radius below the image side; replicate beyond it.
    border = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    size = 2 * radius + 1
    return kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma), border_type=border).clamp(0, 1)


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per example: ``model``'s top-1 prediction equals ``y``."""
    return torch.cat([model(c).argmax(1) for c in x.split(batch_size)]) == y


def per_class(flags: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> list[float]:
    """Accuracy per class of the per-example ``flags``."""
    return [float(flags[y == c].float().mean()) if bool((y == c).any()) else float("nan") for c in range(num_classes)]


def per_class_table(flags: dict[str, torch.Tensor], y: torch.Tensor, num_classes: int = 10) -> dict[str, dict[str, float]]:
    """{class: {model: accuracy, ..., "gain": fused - fg}} for per-model per-example ``flags``."""
    accs = {name: per_class(f, y, num_classes) for name, f in flags.items()}
    table = {}
    for c in range(num_classes):
        if not bool((y == c).any()):
            continue   # a small test subset may miss a class; NaN would not survive JSON
        row = {name: round(a[c], 4) for name, a in accs.items()}
        if "fused" in row and "fg" in row:
            row["gain"] = round(row["fused"] - row["fg"], 4)
        table[str(c)] = row
    return table


def _accuracies(flags: dict[str, torch.Tensor], y: torch.Tensor) -> dict:
    return {**{f"{name}_acc": float(f.float().mean()) for name, f in flags.items()},
            "per_class": per_class_table(flags, y)}


def craft(attack: EvasionAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attack``'s Linf-``eps`` candidates against ``model``; with ``mask``, through :class:`RegionRestricted`."""
    threat = ThreatModel("Linf", float(eps))
    if mask is None:
        return attack(model, x, y, threat).x_adv
    region = RegionRestricted(model, x, mask)
    x_adv = region.project(attack(region, region.encode(), y, threat).x_adv)
    leak = outside_mask_change(x, x_adv, mask)
    if leak > 0:
        raise RuntimeError(f"{attack.name}: a region-restricted candidate changed pixels outside the mask by {leak}")
    return x_adv.detach()


def evaluate_suite(fg: nn.Module, bg: nn.Module, fused: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                   mask: torch.Tensor, *, attacks: Mapping[str, EvasionAttack], eps: Sequence[float],
                   sigma: Sequence[float]) -> Iterator[dict]:
    """Rows for every fused model: clean, transfer-from-fg, e2e-fg-region and e2e-whole per attack and eps, blur.

    Each row holds ``fg_acc``, ``bg_acc`` and ``fused_acc`` on the examples of its threat (crafted on fg for the
    transfer, on the fused model for the end-to-end threats) and, for the end-to-end threats, ``fg_whitebox_acc``:
    fg under the same threat crafted on fg itself, the fair single-stream baseline. Rows come as they are made.
    """
    def scored(model_name: str, model: nn.Module, threat: str, attack: str, x_eval: torch.Tensor, level: float,
               robust: bool, **extra: object) -> dict:
        models = {"fg": fg, "bg": bg, "fused": model}
        flags = {k: robust_correct(m, x, y, x_eval, level) if robust else correct(m, x_eval, y)
                 for k, m in models.items()}
        key = "sigma" if threat == "blur" else "eps"
        return {"model": model_name, "threat": threat, "attack": attack, "n": len(y), key: level,
                **_accuracies(flags, y), **extra}

    for name, model in fused.items():
        yield scored(name, model, "clean", "none", x, 0.0, robust=False)
    for e in eps:
        for attack_name, attack in attacks.items():
            adv = craft(attack, fg, x, y, e)
            for name, model in fused.items():
                yield scored(name, model, "transfer-from-fg", attack_name, adv, e, robust=True)
            for threat, region in (("e2e-fg-region", mask), ("e2e-whole", None)):
                fg_own = float(robust_correct(fg, x, y, craft(attack, fg, x, y, e, region), e).float().mean())
                for name, model in fused.items():
                    adv = craft(attack, model, x, y, e, region)
                    yield scored(name, model, threat, attack_name, adv, e, robust=True, fg_whitebox_acc=fg_own)
    for s in sigma:
        xb = gaussian_blur(x, s)
        for name, model in fused.items():
            yield scored(name, model, "blur", "gaussian", xb, s, robust=False)
