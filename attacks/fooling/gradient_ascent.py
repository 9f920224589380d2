"""Gradient-ascent fooling images (the `find_fooling_image.py` path of Nguyen et al., CVPR 2015).

All target classes are optimised together, one image per class. Each step:
    x <- clip(x + lr * grad_x objective_c(x), 0, 1)          objective: softmax prob or logit of c
    x <- center + (1 - decay) * (x - center)                  optional L2 decay toward a centre image
    every `blur_every` steps: Gaussian blur with sigma `blur_radius` (optional)
The "progress" step-size policy targets a fixed rise of the objective per step:
    desired = min(early_prog, late_prog_mult * (1 - p_c)),   lr = min(max_lr, desired / ||g||^2).
Pixels stay in [0, 1]: the gradient is projected onto the box and, unlike the unbounded Caffe
version, each step's RMS pixel change is capped (`max_step_rms`) so the first steps cannot jump
into a saturated corner. The step at which each class first becomes the arg-max and first exceeds
0.99 / 0.999 / 0.9999 is recorded. White-box: it needs the model's gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.fooling.result import DEFAULT_THRESHOLDS, FoolingResult, ThresholdTracker
from attacks.base import AttackError
from rbl_core.config import CONFIDENCE, check_ranges, ranged


@dataclass
class GradientAscentSettings:
    """The ascent itself, what a user tunes (``task.gradient_ascent``); reference defaults, decay off here."""

    steps: int = ranged(300, ge=1)
    objective: str = ranged("prob", choices=("prob", "logit"))             # softmax prob or pre-softmax unit
    lr_policy: str = ranged("progress", choices=("progress", "constant"))
    lr: float = ranged(0.1, gt=0)            # step size for the constant policy
    max_lr: float = ranged(1e12, gt=0)
    max_step_rms: float | None = ranged(0.05, gt=0)   # trust region: RMS pixel change per step (None: uncapped)
    early_prog: float = ranged(0.03, gt=0)
    late_prog_mult: float = ranged(0.1, gt=0)
    decay: float = ranged(0.0, ge=0, lt=1)   # L2 decay toward `center` per step (reference find_image: 0.01)
    blur_radius: float = ranged(0.0, ge=0)   # Gaussian sigma in pixels; 0 disables (reference: >= 0.3 if used)
    blur_every: int = ranged(1, ge=1)
    # "uniform" U(0,1), "center_plus" centre + N(0,1)/255, "zeros"
    start: str = ranged("uniform", choices=("uniform", "center_plus", "zeros"))
    stop_confidence: float | None = ranged(0.9999, **CONFIDENCE)   # stop once every class reached it (None: all steps)


@dataclass
class GradientAscentConfig(GradientAscentSettings):
    """The settings plus the confidence levels whose first step is recorded."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS

    def __post_init__(self) -> None:
        check_ranges(self, AttackError)
        if self.blur_radius and self.blur_radius < 0.3:
            raise AttackError(f"blur_radius must be 0 or >= 0.3 (reference limit), got {self.blur_radius}")
        if self.stop_confidence is not None and self.stop_confidence not in self.thresholds:
            self.thresholds = tuple(sorted(set(self.thresholds) | {self.stop_confidence}))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur with reflect padding (kernel radius ceil(3 sigma))."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    ch = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    k1 = k1[radius - pad: radius + pad + 1]
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    xp = F.conv2d(xp, k1.view(1, 1, 1, -1).repeat(ch, 1, 1, 1), groups=ch)
    return F.conv2d(xp, k1.view(1, 1, -1, 1).repeat(ch, 1, 1, 1), groups=ch)


def gradient_ascent_fooling(model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
                            config: GradientAscentConfig | None = None, seed: int = 0,
                            classes: list[int] | None = None,
                            center: torch.Tensor | None = None) -> FoolingResult:
    """Find one image per target class by ascending its probability (or logit)."""
    config = config or GradientAscentConfig()
    classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    if any(not 0 <= c < num_classes for c in classes):
        raise AttackError(f"classes must lie in [0, {num_classes}), got {classes}")
    if len(image_shape) != 3:
        raise AttackError(f"image_shape must be (C, H, W), got {image_shape}")
    model.eval()
    n = len(classes)
    target = torch.tensor(classes)
    rows = torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    center = torch.full((1, *image_shape), 0.5) if center is None else center.reshape(1, *image_shape).float()
    if config.start == "uniform":
        x = torch.rand((n, *image_shape), generator=gen)
    elif config.start == "zeros":
        x = torch.zeros((n, *image_shape))
    else:
        x = (center + torch.randn((n, *image_shape), generator=gen) / 255.0).clamp(0, 1)

    tracker = ThresholdTracker(n, config.thresholds)
    best_conf = np.full(n, -1.0)
    best_x = x.clone()
    best_pred = torch.zeros(n, dtype=torch.long)
    first_argmax = np.full(n, -1, dtype=np.int64)
    history: list[dict] = []
    done_steps = 0
    for step in range(config.steps + 1):
        x.requires_grad_(True)
        logits = model(x)
        if logits.shape != (n, num_classes):
            raise AttackError(f"model returned shape {tuple(logits.shape)}, expected ({n}, {num_classes})")
        probs = logits.double().softmax(dim=1)
        p_c = probs[rows, target]
        # Record the current iterate before updating it: step k = k gradient updates applied.
        p_np = p_c.detach().double().numpy()
        pred = probs.argmax(dim=1).detach()
        better = p_np > best_conf
        best_conf = np.where(better, p_np, best_conf)
        best_x[torch.from_numpy(better)] = x.detach()[torch.from_numpy(better)]
        best_pred[torch.from_numpy(better)] = pred[torch.from_numpy(better)]
        newly_argmax = (pred == target).numpy() & (first_argmax < 0)
        first_argmax[newly_argmax] = step
        tracker.update(best_conf, step, step)
        history.append({"step": step, "min": float(best_conf.min()), "mean": float(best_conf.mean())})
        done_steps = step
        if step == config.steps or (config.stop_confidence is not None
                                    and tracker.all_reached(config.stop_confidence)):
            break
        if config.objective == "prob":
            # grad p_c = p_c * grad log p_c; going through log-softmax in float64 keeps the gradient
            # finite where p_c underflows in float32 (far-off classes on an over-confident model).
            logp = logits.double().log_softmax(dim=1)[rows, target]
            (grad_logp,) = torch.autograd.grad(logp.sum(), x)
            grad = logp.detach().exp().view(-1, 1, 1, 1) * grad_logp.double()
        else:
            (grad,) = torch.autograd.grad(logits[rows, target].sum(), x)
            grad = grad.double()
        with torch.no_grad():
            # Project onto the box: components pushing a saturated pixel outward are dropped, so the
            # progress policy's ||g||^2 measures the step that clipping will actually let through.
            xd = x.detach()
            grad = grad * ~(((xd <= 0) & (grad < 0)) | ((xd >= 1) & (grad > 0)))
            if config.lr_policy == "progress":
                p_now = torch.from_numpy(p_np)
                desired = torch.minimum(torch.full_like(p_now, config.early_prog),
                                        config.late_prog_mult * (1.0 - p_now))
                g2 = grad.flatten(1).pow(2).sum(1).clamp_min(1e-300)
                lr = (desired / g2).clamp(max=config.max_lr)
            else:
                lr = torch.full((n,), config.lr, dtype=torch.float64)
            step_x = lr.view(-1, 1, 1, 1) * grad
            if config.max_step_rms:
                # Trust region: far from the target p_c is exponentially small and the linear
                # model behind "progress" overshoots into a saturated corner it cannot leave.
                cap = config.max_step_rms * math.sqrt(grad[0].numel())
                norm = step_x.flatten(1).norm(dim=1).clamp_min(1e-300)
                step_x = step_x * (cap / norm).clamp(max=1.0).view(-1, 1, 1, 1)
            x = (xd + step_x.float()).clamp(0, 1)
            if config.decay:
                x = center + (1.0 - config.decay) * (x - center)
            if config.blur_radius and (step + 1) % config.blur_every == 0:
                x = gaussian_blur(x, config.blur_radius)
            x = x.clamp(0, 1)

    return FoolingResult(
        method=f"gradient_ascent_{config.objective}", images=best_x.detach(),
        confidence=torch.from_numpy(best_conf), predicted=best_pred, evaluations=(done_steps + 1) * n,
        steps=done_steps, time_s=tracker.elapsed(), thresholds=tracker.thresholds,
        first_evaluation=tracker.first_evaluation, first_step=tracker.first_step,
        first_time=tracker.first_time, classes=tuple(classes), history=history,
        extra={"steps_to_argmax": [int(s) for s in first_argmax]},
    )
