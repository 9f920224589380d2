"""Differentiable IBP and CROWN-IBP margin bounds of a ReLU ``nn.Sequential``, and the certified-training loss.

IBP (Gowal et al. 2018) pushes the input box through every layer as centre/radius
(``W c + b``, ``|W| r``); CROWN-IBP (Zhang et al. 2020) keeps IBP's pre-activation bounds
but bounds the output margins by one CROWN back-substitution from the specification to the
input. Both run on the module itself (Conv2d stays a convolution), batched, and are
differentiable in the weights, so they serve as a training loss. The back-substitution
through an affine module is its vector-Jacobian product, so any Linear/Conv2d/Flatten works
without writing its transpose by hand. The specification rows are ``e_y - e_j``: the
lower bound of ``z_y - z_j`` for every class ``j``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .network import UnsupportedOperationError

METHODS = ("ibp", "crown_ibp")
_AFFINE = (nn.Linear, nn.Conv2d, nn.Flatten)


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The flat list of Linear/Conv2d/Flatten/ReLU modules of a (nested) ``nn.Sequential``; others raise."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedOperationError(f"certified training needs an nn.Sequential, got {type(model).__name__}")
    out: list[nn.Module] = []
    for m in model:
        if isinstance(m, nn.Sequential):
            out += sequential_layers(m)
        elif isinstance(m, _AFFINE + (nn.ReLU,)):
            out.append(m)
        else:
            raise UnsupportedOperationError(f"certified training supports Linear, Conv2d, Flatten and ReLU, "
                                            f"not {type(m).__name__}")
    return out


def _abs_apply(m: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """``|W| r`` for an affine module (no bias): how a radius grows through it."""
    if isinstance(m, nn.Linear):
        return F.linear(r, m.weight.abs())
    if isinstance(m, nn.Conv2d):
        return F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    return m(r)


def spec_matrix(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K, K) rows ``e_y - e_j`` (the row of the true class is zero)."""
    eye = torch.eye(num_classes, dtype=torch.get_default_dtype(), device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def ibp_bounds(layers: list[nn.Module], lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor | None = None):
    """Interval bounds: ``(pre-activation (lo, hi) per ReLU, margin lower bounds (B, K) or output (lo, hi))``.

    With ``C`` the last Linear is merged with the specification first (the tighter IBP bound of Gowal et al.).
    """
    pre = []
    last = len(layers) - 1
    for i, m in enumerate(layers):
        if isinstance(m, nn.ReLU):
            pre.append((lo, hi))
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
            continue
        if i == last and C is not None:
            if not isinstance(m, nn.Linear):
                raise UnsupportedOperationError("the last layer must be nn.Linear for margin bounds")
            W = C @ m.weight                                           # (B, K, n)
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            low = (W @ mid.unsqueeze(-1)).squeeze(-1) - (W.abs() @ rad.unsqueeze(-1)).squeeze(-1) + C @ m.bias
            return pre, low
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        mid, rad = m(mid), _abs_apply(m, rad)
        lo, hi = mid - rad, mid + rad
    return pre, (lo, hi)


def _vjp(m: nn.Module, lam: torch.Tensor, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam`` pulled back through affine ``m``: (lam @ W, lam . b), differentiable in the weights."""
    train = torch.is_grad_enabled()  # training differentiates through the pull-back; evaluation does not
    with torch.enable_grad():  # the pull-back is itself a gradient, also under no_grad
        z = torch.zeros((lam.shape[0],) + in_shape, dtype=lam.dtype, requires_grad=True)
        out = m(z)
        (back,) = torch.autograd.grad(out, z, grad_outputs=lam, create_graph=train)
    if not train:
        back, out = back.detach(), out.detach()
    return back, (lam * out).flatten(1).sum(1)


def crown_ibp_margins(layers: list[nn.Module], lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor,
                      pre: list | None = None) -> torch.Tensor:
    """CROWN-IBP lower bounds (B, K) of ``C f(x)`` over the box, with IBP pre-activation bounds ``pre``."""
    if pre is None:
        pre = ibp_bounds(layers, lo, hi, C)[0]
    shapes, h = [], lo[:1]
    with torch.no_grad():
        for m in layers:
            shapes.append(tuple(h.shape[1:]))
            h = m(h)
    B, K = C.shape[:2]
    lam = C.reshape(B * K, -1)
    const = torch.zeros(B * K, dtype=lo.dtype)
    relu_i = len(pre)
    for i in range(len(layers) - 1, -1, -1):
        m = layers[i]
        if isinstance(m, nn.ReLU):
            relu_i -= 1
            lb, ub = (t.repeat_interleave(K, 0) for t in pre[relu_i])
            unstable = (lb < 0) & (ub > 0)
            su = torch.where(unstable, ub / (ub - lb).clamp(min=1e-12), (lb >= 0).to(lb.dtype))
            tu = torch.where(unstable, -lb * su, torch.zeros_like(lb))
            al = torch.where(unstable, (ub > -lb).to(lb.dtype), (lb >= 0).to(lb.dtype))
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            const = const + (neg * tu).flatten(1).sum(1)
            lam = pos * al + neg * su
        else:
            lam, c = _vjp(m, lam, shapes[i])
            const = const + c
    lo_k, hi_k = lo.repeat_interleave(K, 0), hi.repeat_interleave(K, 0)
    low = (lam.clamp(min=0) * lo_k + lam.clamp(max=0) * hi_k).flatten(1).sum(1) + const
    return low.reshape(B, K)


def margin_lower_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, num_classes: int,
                        method: str = "ibp", beta: float = 0.0, clip: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Lower bounds (B, K) of ``z_y - z_j`` over the L-inf ball; CROWN-IBP mixes ``beta`` CROWN-IBP + (1 - beta) IBP."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    layers = sequential_layers(model)
    lo, hi = (x - eps).clamp(*clip), (x + eps).clamp(*clip)
    C = spec_matrix(y, num_classes).to(x.dtype)
    pre, ibp_low = ibp_bounds(layers, lo, hi, C)
    if method == "ibp" or beta <= 0:
        return ibp_low
    return beta * crown_ibp_margins(layers, lo, hi, C, pre) + (1 - beta) * ibp_low


@dataclass(frozen=True)
class CertifiedLoss:
    """``kappa CE(clean) + (1 - kappa) CE(-margin bounds)`` with the usual schedule over the training steps.

    Warm-up (``warmup`` share of the steps) trains clean at eps 0; over the next ``ramp`` share eps
    grows linearly to ``eps`` while kappa and (CROWN-IBP) the CROWN-IBP weight beta move linearly
    from the first to the second value of their (start, end) pairs; the rest trains at the end values.
    """

    method: str
    eps: float
    num_classes: int
    warmup: float = 0.1
    ramp: float = 0.5
    kappa: tuple[float, float] = (1.0, 0.5)   # Gowal et al.: clean weight 1 -> 0.5
    beta: tuple[float, float] = (1.0, 0.0)    # Zhang et al.: CROWN-IBP share 1 -> 0

    def schedule(self, step: int, total: int) -> tuple[float, float, float]:
        """``(eps, kappa, beta)`` at ``step`` of ``total``."""
        r = min(max((step / max(total, 1) - self.warmup) / max(self.ramp, 1e-12), 0.0), 1.0)
        return (self.eps * r, self.kappa[0] + (self.kappa[1] - self.kappa[0]) * r,
                self.beta[0] + (self.beta[1] - self.beta[0]) * r)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, total: int) -> torch.Tensor:
        """The training loss of one batch at ``step`` of ``total``."""
        eps, kappa, beta = self.schedule(step, total)
        clean = F.cross_entropy(model(x), y)
        if eps <= 0:
            return clean
        low = margin_lower_bounds(model, x, y, eps, self.num_classes, self.method, beta)
        return kappa * clean + (1 - kappa) * F.cross_entropy(-low, y)
