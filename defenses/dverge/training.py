"""DVERGE training (Yang et al., NeurIPS 2020): diversify the sub-models' vulnerabilities by cross-training.

Per epoch one feature layer is drawn at random (re-sampled *every* epoch: sampling it once broke the
TRS port, see seeds.md 6e). Per batch, for every sub-model j the distilled image x'_j (source image
carrying the target image's layer features for model j, ``feature_distillation.distill_features``) is
built *before* any update; then every model i is trained on the other models' x'_j with the source
labels: L_i = coeff * sum_{j != i} CE(f_i(x'_j), y_s) [+ CE(f_i(x_s), y_s) for DVERGE+]
[+ CE(f_i(PGD_i(x_s)), y_s) for DVERGE+AdvT]. The reference is zjysteven/DVERGE ``train/train_dverge.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from defenses.dverge.ensemble import Ensemble
from defenses.dverge.feature_distillation import distill_features, feature_layers
from rbl_core.data import index_batches
from rbl_core.threat import Norm, ThreatModel
from rbl_core.training import augment_batch, fit, make_optimizer, pgd_perturb


@dataclass
class DvergeConfig:
    """Every DVERGE hyper-parameter; defaults are the reference MNIST settings scaled to CPU."""

    epochs: int = 6                 # reference: 120 (MNIST) / 200 (CIFAR-10)
    batch_size: int = 128           # reference: 128
    optimizer: str = "sgd"          # reference: SGD, momentum 0.9, wd 1e-4
    lr: float = 0.01                # reference: 0.001 (MNIST, 120 epochs) / 0.1 (CIFAR); more per epoch here
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of epochs (reference 100/200, 150/200)
    lr_gamma: float = 0.1
    distill_eps: float = 0.3        # reference: 0.35 MNIST / 0.07 CIFAR-10
    distill_step_size: float = 0.03  # reference: eps / 10
    distill_steps: int = 10         # reference: 10
    distill_mu: float = 1.0         # momentum decay of MI-FGSM (reference 1)
    distill_momentum: bool = True   # reference: on
    distill_rand_start: bool = False  # reference: off
    distill_layer: int | None = None  # 1-based fixed layer; None = random each epoch (reference default)
    distill_eval_mode: bool = False   # reference distils with the models in train() mode
    plus_clean: bool = False        # DVERGE+: add CE on the clean source batch
    plus_adv: bool = False          # DVERGE+AdvT: add CE on PGD_i(x_s)
    dverge_coeff: float = 1.0       # weight of the cross-training term (reference --dverge-coeff)
    adv_eps: float = 8 / 255        # PGD for plus_adv (reference 8/255, step 2/255, 10 steps)
    adv_step_size: float = 2 / 255
    adv_steps: int = 10
    augment: bool = False           # random shift + flip (reference CIFAR-10 crop + flip)
    n_train: int | None = None      # first n training images (CPU scaling); None = all
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "DvergeConfig":
        """Build from a mapping, naming any unknown key instead of ignoring it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise KeyError(f"unknown DVERGE config key(s) {unknown}; valid keys: {sorted(names)}")
        kw = dict(params)
        if "lr_milestones" in kw:
            kw["lr_milestones"] = tuple(kw["lr_milestones"])
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise a clear error for an out-of-range setting."""
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not 0 <= self.distill_eps <= 1 or self.distill_step_size <= 0 or self.distill_steps < 1:
            raise ValueError("distill_eps must be in [0, 1], distill_step_size > 0, distill_steps >= 1")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones are fractions of the epochs in (0, 1), got {self.lr_milestones}")


@dataclass
class DvergeHistory:
    """What happened during training: layer per epoch, mean losses, time split."""

    layers: list[int] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)   # [epoch][member]
    epoch_times: list[float] = field(default_factory=list)
    distill_times: list[float] = field(default_factory=list)


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"training data must be NCHW images with one label each, got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"training images must lie in [0, 1], got range [{x.min():.3f}, {x.max():.3f}]")


def train_dverge(
    ensemble: Ensemble,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DvergeConfig,
    progress: Callable[[str], None] | None = print,
) -> DvergeHistory:
    """Run DVERGE cross-training on ``ensemble`` in place (start it from a trained baseline)."""
    cfg.validate()
    _check_data(x, y)
    if len(ensemble) < 2:
        raise ValueError(f"DVERGE needs at least 2 sub-models, the ensemble has {len(ensemble)}")
    if cfg.n_train is not None:
        x, y = x[: cfg.n_train], y[: cfg.n_train]
    layer_lists = [feature_layers(m, x[:1]) for m in ensemble]
    depth = min(len(ls) for ls in layer_lists)
    if cfg.distill_layer is not None and not 1 <= cfg.distill_layer <= depth:
        raise ValueError(f"distill_layer must be in 1..{depth} for these sub-models, got {cfg.distill_layer}")
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    # One optimiser over every member: member i's loss reaches only its weights (see fit).
    opt = make_optimizer(ensemble.parameters(), cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         momentum=cfg.momentum)
    milestones = sorted({max(1, round(f * cfg.epochs)) for f in cfg.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.lr_gamma)
    hist = DvergeHistory()
    now: dict[str, Any] = {}   # this epoch's start time, distillation time and per-member loss sums

    def batches(_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        now.update(start=time.perf_counter(), distill=0.0, loss=[0.0] * len(ensemble))
        # Re-sample the layer every epoch (reference: random.randint(1, depth)).
        hist.layers.append(cfg.distill_layer if cfg.distill_layer is not None else rng.randint(1, depth))
        src, tgt = index_batches(len(x), cfg.batch_size, gen), index_batches(len(x), cfg.batch_size, gen)
        for bs, bt in zip(src, tgt):  # independent shuffles = random targets; batches of equal sizes
            xs, xt = x[bs], x[bt]
            if cfg.augment:
                flip = xs.shape[1] == 3  # flips only for natural (colour) images, as the zoo does
                xs, xt = augment_batch(xs, gen, flip), augment_batch(xt, gen, flip)
            yield xs, y[bs], xt

    def losses(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], _step: int) -> list[torch.Tensor]:
        xs, ys, xt = batch
        ensemble.train(not cfg.distill_eval_mode)
        td = time.perf_counter()
        distilled = [  # every x'_j before any member is updated
            distill_features(m, layer_list[hist.layers[-1] - 1], xs, xt, cfg.distill_eps, cfg.distill_step_size,
                             cfg.distill_steps, cfg.distill_mu, cfg.distill_momentum, cfg.distill_rand_start)
            for m, layer_list in zip(ensemble, layer_lists)
        ]
        now["distill"] += time.perf_counter() - td
        out = []
        for i, m in enumerate(ensemble):
            m.train()
            adv = (pgd_perturb(m, xs, ys, ThreatModel(Norm.Linf, cfg.adv_eps), steps=cfg.adv_steps,
                               step_size=cfg.adv_step_size) if cfg.plus_adv else None)
            loss = cfg.dverge_coeff * sum(F.cross_entropy(m(xd), ys) for j, xd in enumerate(distilled) if j != i)
            if cfg.plus_clean:
                loss = loss + F.cross_entropy(m(xs), ys)
            if adv is not None:
                loss = loss + F.cross_entropy(m(adv), ys)
            out.append(loss)
        return out

    def record(batch: tuple[torch.Tensor, ...], step_losses: list[torch.Tensor]) -> None:
        now["loss"] = [total + loss.item() * len(batch[0]) for total, loss in zip(now["loss"], step_losses)]

    def end_epoch(epoch: int, _last: object) -> None:
        sched.step()
        hist.losses.append([v / len(x) for v in now["loss"]])
        hist.epoch_times.append(time.perf_counter() - now["start"])
        hist.distill_times.append(now["distill"])
        if progress is not None:
            progress(f"dverge epoch {epoch + 1}/{cfg.epochs} layer {hist.layers[-1]}/{depth} "
                     f"loss {[round(v, 3) for v in hist.losses[-1]]} {hist.epoch_times[-1]:.1f}s "
                     f"(distillation {now['distill'] / hist.epoch_times[-1]:.0%})")

    fit(ensemble, opt, batches, losses, epochs=range(cfg.epochs), on_step=record, on_epoch_end=end_epoch)
    return hist


def dverge_from_baseline(baseline: Ensemble, x: torch.Tensor, y: torch.Tensor, cfg: DvergeConfig,
                         progress: Callable[[str], None] | None = print) -> tuple[Ensemble, DvergeHistory]:
    """Copy a trained baseline ensemble and DVERGE-train the copy (the baseline is left untouched)."""
    model = copy.deepcopy(baseline)
    hist = train_dverge(model, x, y, cfg, progress)
    return model, hist


def member_seeds(seed: int, n: int) -> Sequence[int]:
    """Distinct, reproducible initialisation seeds for the n members of an ensemble."""
    return [seed * 1000 + k for k in range(n)]
