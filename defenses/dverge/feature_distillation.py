"""DVERGE feature distillation: find z near a source image whose layer-l features match a target's.

x'_j = argmin_{||z - x_s||_inf <= eps} ||f_j^l(z) - f_j^l(x_t)||_2^2, solved with momentum iterative
FGSM (per-sample L1-normalised gradient, mu = 1, no random start), as in the reference
``distillation.py::Linf_distillation``. The reference hard-codes ResNet-20 layer indices; following the
authors' advice for other architectures we take features with forward hooks. The candidate layers are
the outputs of every Conv2d / Linear (or of the BatchNorm right after it), i.e. features *before*
the ReLU, in execution order; the last one is the logits.
"""

from __future__ import annotations

import torch
from torch import nn

_FEATURE_TYPES = (nn.Conv2d, nn.Linear)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class _StopForward(Exception):
    """Raised by the hook to stop the forward pass once the wanted feature is computed."""


def feature_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Pre-ReLU feature modules of ``model`` in execution order (conv/linear, or the BN after it)."""
    if example.dim() != 4:
        raise ValueError(f"feature_layers needs an NCHW example batch, got shape {tuple(example.shape)}")
    order: list[nn.Module] = []
    handles = []
    for m in model.modules():
        if isinstance(m, _FEATURE_TYPES + _NORM_TYPES):
            handles.append(m.register_forward_hook(lambda mod, _i, _o: order.append(mod)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers: list[nn.Module] = []
    for mod in order:
        # A BatchNorm directly after a conv/linear replaces it: the reference takes "conv + BN" outputs.
        if isinstance(mod, _NORM_TYPES) and layers and isinstance(layers[-1], _FEATURE_TYPES):
            layers[-1] = mod
        elif isinstance(mod, _FEATURE_TYPES):
            layers.append(mod)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layer to take features from")
    return layers


def layer_features(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of ``layer`` when ``model`` runs on ``x``; the forward pass stops right after it."""
    store: dict[str, torch.Tensor] = {}

    def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        store["out"] = out
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "out" not in store:
        raise RuntimeError(f"layer {layer!r} was not called during the forward pass of {type(model).__name__}")
    return store["out"]


def distill_features(
    model: nn.Module,
    layer: nn.Module,
    x_source: torch.Tensor,
    x_target: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int = 10,
    mu: float = 1.0,
    momentum: bool = True,
    rand_start: bool = False,
) -> torch.Tensor:
    """Distilled non-robust feature x' of ``x_target`` hidden in ``x_source`` (Linf ball, MI-FGSM)."""
    if x_source.shape != x_target.shape:
        raise ValueError(f"source and target batches differ in shape: {tuple(x_source.shape)} vs {tuple(x_target.shape)}")
    if eps < 0 or step_size <= 0 or steps < 1:
        raise ValueError(f"distillation needs eps >= 0, step_size > 0, steps >= 1; got {eps}, {step_size}, {steps}")
    x_nat = x_source.detach()
    with torch.no_grad():
        # The target's features do not depend on z: compute them once, not every step.
        target_feat = layer_features(model, layer, x_target.detach()).detach()
    if rand_start:
        z = (x_nat + torch.empty_like(x_nat).uniform_(-eps, eps)).clamp(0.0, 1.0)
    else:
        z = x_nat.clone()
    g = torch.zeros_like(z)
    # Only the input gradient is needed; freezing parameter grads saves the weight-gradient work.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            z.requires_grad_(True)
            with torch.enable_grad():
                loss = (layer_features(model, layer, z) - target_feat).pow(2).sum()
                grad = torch.autograd.grad(loss, [z])[0]
            if momentum:
                norm = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12)
                g = mu * g + grad / norm.view(-1, *([1] * (grad.dim() - 1)))
            else:
                g = grad
            # Descend: we minimise the feature distance.
            z = z.detach() - step_size * torch.sign(g)
            z = torch.min(torch.max(z, x_nat - eps), x_nat + eps).clamp(0.0, 1.0)
    finally:
        for p in params:
            p.requires_grad_(True)
    return z.detach()
