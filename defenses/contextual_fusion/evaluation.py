"""Evaluation of fg-only, bg-only and fused classifiers: transferred and end-to-end Linf attacks, and Gaussian blur.

Threats (seeds.md section 7 (e) asks to state them):
* ``transfer-from-fg``: FGSM / PGD crafted on the foreground classifier over the whole image (the "known
  adversary" of the object classifier), then applied unchanged to every model;
* ``e2e-fg-region``: PGD against the fused model itself, perturbing only pixels inside the digit mask;
* ``e2e-whole``: PGD against the fused model over the whole image (the attacker may change the scene too);
* ``blur``: a Gaussian blur of standard deviation sigma (not a norm ball; no re-measurement applies).
Every adversarial batch goes through ``rbl_core.remeasure.remeasure`` against the model it is scored on, and the
accuracy reported is the share of re-measured, in-budget candidates that the model still classifies right.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rbl_core.remeasure import remeasure
from rbl_core.threat import ThreatModel


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` on the CE loss (only inside ``mask`` when given), clipped to [0, 1]."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    step = eps * grad.sign()
    if mask is not None:
        step = step * mask
    return (x.detach() + step).clamp(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        mask: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Linf PGD with a random start and step 2.5 eps / steps; the perturbation stays zero outside ``mask``."""
    if eps == 0 or steps <= 0:
        return x.detach().clone()
    gen = torch.Generator().manual_seed(seed)
    m = torch.ones_like(x) if mask is None else mask
    step = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps * m
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        with torch.no_grad():
            delta = (delta + step * grad.sign()).clamp(-eps, eps) * m
            delta = (x + delta).clamp(0, 1) - x   # x + delta in [0, 1]; still zero where m is zero
    return (x + delta).detach()


def craft(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
          mask: torch.Tensor | None = None, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """FGSM or PGD examples in batches (``name`` is "fgsm" or "pgd")."""
    out = []
    for i, start in enumerate(range(0, len(x), batch_size)):
        sl = slice(start, start + batch_size)
        mk = None if mask is None else mask[sl]
        if name == "fgsm":
            out.append(fgsm(model, x[sl], y[sl], eps, mk))
        elif name == "pgd":
            out.append(pgd(model, x[sl], y[sl], eps, steps, mk, seed=seed + i))
        else:
            raise ValueError(f"unknown attack {name!r}: choose fgsm or pgd")
    return torch.cat(out) if out else x.clone()


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


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` over radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel with reflect padding (kornia is not a dependency); sigma 0 = identity."""
    if sigma <= 0:
        return x.clone()
    k = gaussian_kernel(sigma).to(x.dtype)
    c, r = x.shape[1], (len(k) - 1) // 2
    # Reflect padding needs radius < side; clamp the radius by falling back to replicate for huge sigma.
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    out = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.conv2d(F.pad(out, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out.clamp(0, 1)


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


def _row(threat: str, attack: str, flags: dict[str, torch.Tensor], y: torch.Tensor, **extra: object) -> dict:
    return {"threat": threat, "attack": attack, "n": len(y),
            **{f"{name}_acc": float(f.float().mean()) for name, f in flags.items()},
            "per_class": per_class_table(flags, y), **extra}


def evaluate_suite(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *,
                   eps: list[float], sigma: list[float], steps: int = 10, seed: int = 0,
                   batch_size: int = 500) -> list[dict]:
    """Clean, transfer-from-fg (FGSM, PGD), e2e-fg-region (PGD), e2e-whole (PGD) and blur rows.

    ``models`` maps "fg", "bg" and "fused" to classifiers of the digit label; each row holds their accuracies
    (``fg_acc``, ``bg_acc``, ``fused_acc``) and the per-class table.
    """
    fg, fused = models["fg"], models["fused"]
    rows = [_row("clean", "none", {k: correct(m, x, y) for k, m in models.items()}, y, eps=0.0)]
    for e in eps:
        for attack in ("fgsm", "pgd"):
            adv = craft(attack, fg, x, y, e, steps=steps, batch_size=batch_size, seed=seed)
            rows.append(_row("transfer-from-fg", attack, {k: robust_correct(m, x, y, adv, e) for k, m in models.items()},
                             y, eps=e))
        adv = craft("pgd", fused, x, y, e, steps=steps, mask=mask, batch_size=batch_size, seed=seed)
        leak = outside_mask_change(x, adv, mask)
        if leak > 0:
            raise RuntimeError(f"e2e-fg-region PGD changed pixels outside the mask by up to {leak}")
        # The fair fg baseline for this threat: masked PGD white-box against fg itself (the fg_acc column is
        # fg on the fused model's examples, a transfer).
        adv_fg = craft("pgd", fg, x, y, e, steps=steps, mask=mask, batch_size=batch_size, seed=seed)
        if outside_mask_change(x, adv_fg, mask) > 0:
            raise RuntimeError("e2e-fg-region PGD on fg changed pixels outside the mask")
        fg_own = float(robust_correct(fg, x, y, adv_fg, e).float().mean())
        rows.append(_row("e2e-fg-region", "pgd", {k: robust_correct(m, x, y, adv, e) for k, m in models.items()},
                         y, eps=e, outside_mask_max=leak, fg_whitebox_acc=fg_own))
        adv = craft("pgd", fused, x, y, e, steps=steps, batch_size=batch_size, seed=seed)
        rows.append(_row("e2e-whole", "pgd", {k: robust_correct(m, x, y, adv, e) for k, m in models.items()},
                         y, eps=e))
    for s in sigma:
        xb = gaussian_blur(x, s)
        rows.append(_row("blur", "gaussian", {k: correct(m, xb, y) for k, m in models.items()}, y, sigma=s))
    return rows
