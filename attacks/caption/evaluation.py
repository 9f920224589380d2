"""Scoring caption attacks: what the captioner says on x' against the target, re-measured from the images alone.

Every number is recomputed here from ``x``, ``x_adv`` and fresh forward passes, never taken from an attack: the
Linf size of every perturbation (a candidate outside the eps ball or [0, 1] is an error, not a success), the
greedy captions of the victim and of a second captioner (transfer), and the encoder-grid distances.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks.caption.captioner import Captioner
from attacks.caption.metrics import bleu4
from attacks.caption.grammar import CaptionGrammar
from attacks.caption.scenes import MNIST_GRAMMAR
from rbl_core.threat import Norm, ThreatModel

STRATEGIES = ("targeted", "keyword")


class PerturbationError(ValueError):
    """An adversarial image outside the eps ball or the image range."""


@dataclass(frozen=True)
class CaptionTarget:
    """What one attack aims for: the target image, its caption (and tokens), and the keyword of the keyword strategy."""

    strategy: str
    image: torch.Tensor          # (3, H, W)
    caption: str
    keyword: str | None = None
    # images (N, 3, H, W) whose mean encoder grid the feature attacks mimic; None: the target image's own grid
    feature_images: torch.Tensor | None = None
    grammar: CaptionGrammar = MNIST_GRAMMAR   # the vocabulary of the caption (the scene set's)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if (self.strategy == "keyword") != (self.keyword is not None):
            raise ValueError("a keyword target needs a keyword, a targeted one none")
        if self.keyword is not None and self.keyword not in self.caption.split():
            raise ValueError(f"keyword {self.keyword!r} is not in the target caption {self.caption!r}")
        f = self.feature_images
        if f is not None and (f.dim() != 4 or len(f) == 0 or f.shape[1:] != self.image.shape):
            raise ValueError(f"feature_images must be (N >= 1, {', '.join(map(str, self.image.shape))}) images like "
                             f"the target image, got shape {tuple(f.shape)}")

    @property
    def tokens(self) -> torch.Tensor:
        """The target caption's token ids (max_len,)."""
        return self.grammar.encode(self.caption.split())

    @torch.no_grad()
    def feature_grid(self, model: Captioner) -> torch.Tensor:
        """The encoder grid (C, H, W) the feature attacks mimic: the mean over ``feature_images``, else the image's."""
        images = self.image.unsqueeze(0) if self.feature_images is None else self.feature_images
        return torch.cat([model.encode(chunk) for chunk in images.split(256)]).mean(dim=0)


@torch.no_grad()
def greedy_captions(model: Captioner, x: torch.Tensor, batch_size: int = 256) -> list[str]:
    """Greedy captions of ``x`` as text."""
    return [model.grammar.decode(t) for chunk in x.split(batch_size) for t in model.greedy(model.encode(chunk))]


@torch.no_grad()
def grid_distance(model: Captioner, x: torch.Tensor, target_grid: torch.Tensor) -> torch.Tensor:
    """Per-image L2 distance between the encoder grids of ``x`` and ``target_grid`` (one (C, H, W) grid or one per x)."""
    a = model.encode(x).flatten(1)
    return (a - target_grid.reshape(-1, a.shape[1])).norm(dim=1)


@torch.no_grad()
def natural_distance(model: Captioner, x: torch.Tensor) -> float:
    """Mean grid distance between different clean images (each image and the next one, cyclically)."""
    if len(x) < 2:
        raise ValueError("natural_distance needs at least two images")
    return float(grid_distance(model, x, model.encode(x.roll(1, dims=0))).mean())


def check_within(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> float:
    """The largest Linf perturbation; raises PerturbationError if one leaves the eps ball or [0, 1].

    The test itself is ``ThreatModel.contains``, the suite's one re-measurement of adversarial examples.
    """
    if x_adv.shape != x.shape:
        raise PerturbationError(f"adversarial images of shape {tuple(x_adv.shape)} do not match the inputs' "
                                f"{tuple(x.shape)}")
    threat = ThreatModel(Norm.Linf, eps)
    inside = threat.contains(x, x_adv)
    linf = float(torch.nan_to_num(threat.distance(x, x_adv), nan=float("inf")).max())
    if not bool(inside.all()):
        raise PerturbationError(f"{int((~inside).sum())} of {len(x)} adversarial images are not finite, leave [0, 1] "
                                f"or exceed eps={eps} (largest Linf {linf:.6f})")
    return linf


def _outcome(captions: list[str], targets: list[CaptionTarget]) -> tuple[list[bool], float]:
    refs = [t.caption for t in targets]
    ok = [c == t.caption if t.strategy == "targeted" else t.keyword in c.split() for c, t in zip(captions, targets)]
    return ok, bleu4(captions, refs)


def score_attack(victim: Captioner, x: torch.Tensor, x_adv: torch.Tensor, targets: list[CaptionTarget], eps: float,
                 transfer: Captioner | None = None) -> dict:
    """Success (exact match or keyword hit), BLEU-4 to the target, distances and transfer of x' (one target per image)."""
    if len(targets) != len(x) or len({t.strategy for t in targets}) != 1:
        raise ValueError(f"score_attack needs one target per image ({len(x)}), all of one strategy")
    linf = check_within(x, x_adv, eps)
    # one grid per distinct target (its feature_grid may average many images), then one per image
    grid_of = {id(t): t.feature_grid(victim) for t in targets}
    grids = torch.stack([grid_of[id(t)] for t in targets])
    clean, adv = greedy_captions(victim, x), greedy_captions(victim, x_adv)
    clean_ok, _ = _outcome(clean, targets)
    ok, bleu = _outcome(adv, targets)
    n = len(ok)
    out = {"n": n, "strategy": targets[0].strategy, "targets": sorted({t.caption for t in targets}),
           "keywords": sorted({t.keyword for t in targets if t.keyword}),
           "success_rate": sum(ok) / n, "success_mask": encode_mask(ok),
           "clean_success_rate": sum(clean_ok) / n, "bleu_to_target": bleu,
           "max_linf": linf, "mean_l2": float((x_adv - x).flatten(1).norm(dim=1).mean()),
           "feature_distance": float(grid_distance(victim, x_adv, grids).mean()),
           "clean_feature_distance": float(grid_distance(victim, x, grids).mean()),
           "examples": [{"clean": c, "target": t.caption, "adversarial": a} for c, t, a in zip(clean, targets, adv)][:6]}
    if transfer is not None:
        t_ok, t_bleu = _outcome(greedy_captions(transfer, x_adv), targets)
        out.update(transfer_success_rate=sum(t_ok) / n, transfer_bleu_to_target=t_bleu)
    return out


def encode_mask(flags: list[bool]) -> str:
    """Per-image booleans as a "0101" string."""
    return "".join("1" if f else "0" for f in flags)
