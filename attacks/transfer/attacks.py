"""Transfer attacks from DVERGE's black-box protocol that foolbox lacks: MI-FGSM and M-DI2-FGSM.

* MI-FGSM / momentum PGD (Dong et al., CVPR 2018): g <- mu*g + grad/||grad||_1, x <- x + alpha*sign(g),
  optionally from a random start and with several restarts (DVERGE uses 3).
* M-DI2-FGSM (Xie et al., CVPR 2019): the same, with the gradient taken through a random
  resize-and-pad of the input applied with probability p (DVERGE: p = 0.5).
Both take the cross-entropy (``"ce"``) or the Carlini-Wagner margin (``"cw"``) loss, as the reference
evaluation does. They are crafted on a *surrogate* model and then measured on the defended one; plain
PGD comes from foolbox through ``attacks.adapters.foolbox_adapter``. SGM (skip-gradient) is not included: it needs residual
connections, and the zoo's small CNNs have none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import AttackResult, EvasionAttack
from attacks.adapters.foolbox_adapter import FoolboxAttack
from rbl_core.remeasure import remeasure
from rbl_core.threat import Norm, ThreatModel


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str, kappa: float = float("inf")) -> torch.Tensor:
    """Per-batch loss to *maximise*: cross-entropy or the CW margin, clipped at ``kappa`` confidence.

    The default (no clipping) keeps pushing past the surrogate's boundary: a margin clipped at 0 stops
    at the boundary, and such barely-adversarial images rarely transfer.
    """
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "cw":
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
        return torch.clamp(other - true, max=kappa).sum()
    raise ValueError(f"attack loss must be 'ce' or 'cw', got {loss!r}")


def input_diversity(x: torch.Tensor, prob: float, resize_rate: float = 0.9) -> torch.Tensor:
    """DI transform: with probability ``prob`` shrink to a random size and zero-pad back at a random offset."""
    if prob <= 0:
        return x
    h = x.shape[-1]
    low = max(1, int(h * resize_rate))
    if low >= h:
        return x
    rnd = int(torch.randint(low, h, (1,)))
    rescaled = F.interpolate(x, size=(rnd, rnd), mode="nearest")
    rem = h - rnd
    top = int(torch.randint(0, rem + 1, (1,)))
    left = int(torch.randint(0, rem + 1, (1,)))
    padded = F.pad(rescaled, (left, rem - left, top, rem - top), value=0.0)
    return padded if float(torch.rand(1)) < prob else x


def momentum_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    mu: float = 1.0,
    loss: str = "ce",
    rand_start: bool = True,
    restarts: int = 1,
    diversity_prob: float = 0.0,
) -> torch.Tensor:
    """Linf momentum iterative attack (MI-FGSM; M-DI2-FGSM when ``diversity_prob > 0``)."""
    if x.dim() != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need NCHW images and one label each, got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if eps < 0 or steps < 1 or restarts < 1:
        raise ValueError(f"need eps >= 0, steps >= 1, restarts >= 1; got {eps}, {steps}, {restarts}")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    x0 = x.detach()
    best = x0.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        z = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1) if rand_start else x0.clone()
        g = torch.zeros_like(z)
        for _ in range(steps):
            z.requires_grad_(True)
            with torch.enable_grad():
                out = model(input_diversity(z, diversity_prob))
                grad = torch.autograd.grad(attack_loss(out, y, loss), [z])[0]
            norm = grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            g = mu * g + grad / norm
            z = z.detach() + alpha * g.sign()
            z = torch.min(torch.max(z, x0 - eps), x0 + eps).clamp(0, 1)
        with torch.no_grad():
            now = model(z).argmax(1) != y
        # Keep, per example, a restart that fools the surrogate (the first one found).
        take = now & ~fooled
        best[take] = z[take]
        best[~fooled & ~now] = z[~fooled & ~now]
        fooled |= now
    return best.detach()


class MomentumPGD(EvasionAttack):
    """MI-FGSM / momentum PGD (Linf) as a harness attack; ``diversity_prob`` > 0 gives M-DI2-FGSM."""

    norms = ("Linf",)

    def __init__(self, steps: int = 20, mu: float = 1.0, loss: str = "ce", rand_start: bool = True,
                 restarts: int = 1, diversity_prob: float = 0.0, rel_step: float = 2.5) -> None:
        self.steps, self.mu, self.loss = steps, mu, loss
        self.rand_start, self.restarts, self.diversity_prob, self.rel_step = rand_start, restarts, diversity_prob, rel_step
        kind = "m_di2_fgsm" if diversity_prob > 0 else "mi_fgsm"
        self.name = f"{kind}_{loss}"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Run the attack inside ``threat`` (Linf only)."""
        # threat.project on top of the loop's clamp: the two round differently, and transfer sets keep their bits
        x_adv = threat.project(x, momentum_pgd(
            model, x, y, threat.eps, self.steps, self.rel_step * threat.eps / self.steps, self.mu, self.loss,
            self.rand_start, self.restarts, self.diversity_prob))
        with torch.no_grad():
            return AttackResult(x_adv, model(x_adv).argmax(1) != y)


def default_transfer_attacks(steps: int = 20, restarts: int = 2) -> list[EvasionAttack]:
    """DVERGE's black-box suite scaled down: PGD, momentum PGD (CE, CW) and M-DI2-FGSM (CE, CW, p=0.5).

    PGD and the CE momentum attack come from foolbox (through the harness adapter); foolbox has no
    CW-loss or input-diversity variant, so those use :func:`momentum_pgd`.
    """
    return [
        FoolboxAttack("PGD", name="pgd_ce", steps=steps, rel_stepsize=0.25, random_start=True),
        FoolboxAttack("MIFGSM", name="mi_fgsm_ce", steps=steps, rel_stepsize=2.5 / steps, random_start=True),
        MomentumPGD(steps=steps, loss="cw", restarts=restarts),
        MomentumPGD(steps=steps, loss="ce", restarts=restarts, diversity_prob=0.5),
        MomentumPGD(steps=steps, loss="cw", restarts=restarts, diversity_prob=0.5),
    ]


def craft_transfer_examples(surrogates: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float,
                            attacks: list[EvasionAttack] | None = None, batch_size: int = 250) -> dict[str, torch.Tensor]:
    """Adversarial images crafted on each surrogate by each attack, keyed ``"<surrogate>/<attack>"``."""
    if not surrogates:
        raise ValueError("craft_transfer_examples needs at least one surrogate model")
    threat = ThreatModel(Norm.Linf, eps)
    attacks = attacks if attacks is not None else default_transfer_attacks()
    out = {}
    for s_name, surrogate in surrogates.items():
        surrogate.eval()
        for atk in attacks:
            parts = [atk(surrogate, x[i:i + batch_size], y[i:i + batch_size], threat).x_adv
                     for i in range(0, len(x), batch_size)]
            out[f"{s_name}/{atk.name}"] = threat.project(x, torch.cat(parts))
    return out


@torch.no_grad()
def transfer_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: dict[str, torch.Tensor],
                      threat: ThreatModel, batch_size: int = 500) -> dict[str, float]:
    """Clean accuracy, accuracy under each transferred set, and under all of them (robust = survives every one).

    Every transferred example is re-measured against ``model`` within ``threat``; one outside the ball
    cannot fool the model.
    """
    model.eval()
    with torch.no_grad():
        ok = torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)]) == y
    res = {"clean": float(ok.float().mean())}
    robust = ok.clone()
    for key, x_adv in adv.items():
        c = ok & ~remeasure(model, x, y, x_adv, threat, batch_size=batch_size).success
        res[key] = float(c.float().mean())
        robust &= c
    res["all"] = float(robust.float().mean())
    return res
