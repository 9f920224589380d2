"""Optimised linear bounds: alpha-CROWN slopes and beta-CROWN split multipliers, batched in torch.

For a batch of sub-problems (input boxes, optionally with ReLU phase splits) the
intermediate pre-activation bounds come from :func:`verify.bounds.compute_bounds` (CROWN,
split-aware). The bound of each output group is then back-substituted with free parameters
and maximised by projected Adam:

- ``alpha`` (per sub-problem, group and unstable neuron, in [0, 1]): the slope of the lower
  ReLU relaxation ``h >= alpha z``, warm-started from CROWN's 0/1 choice;
- ``beta`` (per sub-problem, group and split neuron, >= 0): a Lagrange multiplier of the
  split constraint ``s z >= 0`` (s = +1 active, -1 inactive), added as ``-beta s z``;
- the weights of a conjunction group's rows (softmax, a point on the simplex).

Soundness: for *any* alpha in [0, 1], beta >= 0 and simplex weights the back-substituted
linear function is a lower bound of the group's combination over the feasible sub-domain
(weak duality), so the optimiser can only change how tight it is. The returned bound is
re-computed from scratch with the best parameters (already projected), widened by
``SLACK`` like every other bound, and never below CROWN's (the max of two valid bounds).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rbl_core.training import make_optimizer

from .ascent import ascent_step
from .bounds import SLACK, Bounds, TorchNet, compute_bounds, concretize, l2_ball


@dataclass
class OptBounds:
    """Optimised bounds of a batch: one value per (sub-problem, group)."""

    lower: torch.Tensor          # (B, G) lower bound of the group's best row combination
    A: torch.Tensor              # (B, G, n0) its linear lower bound A x + c
    c: torch.Tensor              # (B, G)
    coef_h: list[torch.Tensor]   # per hidden layer (B, G, n_k): back-substituted coefficient on h_k
    base: Bounds                 # the CROWN bounds the optimisation started from


def _group_weights(logits: torch.Tensor, slices: list[slice]) -> torch.Tensor:
    """Softmax of the row logits within each group: (B, m) with every group's weights on a simplex."""
    return torch.cat([torch.softmax(logits[:, s], dim=1) for s in slices], dim=1)


def _objective(C: torch.Tensor, d: torch.Tensor, w: torch.Tensor, slices) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group the combined spec row ``sum_r w_r C_r`` (B, G, n_out) and rhs (B, G)."""
    Cg = torch.stack([(w[:, s, None] * C[s]).sum(1) for s in slices], 1)
    dg = torch.stack([(w[:, s] * d[s]).sum(1) for s in slices], 1)
    return Cg, dg


def _backsub(tn: TorchNet, base: Bounds, Cg, dg, alpha, beta, signs, lo, hi, ball):
    """Lower bound of ``Cg f(x) - dg`` with the given slopes/multipliers; also returns A, c, coef_h."""
    lam = Cg @ tn.W[-1]
    const = Cg @ tn.b[-1] - dg
    coef_h = [None] * (tn.L - 1)
    for i in range(tn.L - 2, -1, -1):
        lo_i, up_i = base.lower[i], base.upper[i]
        unst = (lo_i < 0) & (up_i > 0)
        su = torch.where(unst, up_i / (up_i - lo_i).clamp(min=1e-30), (lo_i >= 0).to(lo_i.dtype))
        tu = torch.where(unst, -lo_i * su, torch.zeros_like(su)).unsqueeze(1)
        al = torch.where(unst.unsqueeze(1), alpha[i], su.unsqueeze(1))  # stable: 0 or 1, as su
        su = su.unsqueeze(1)
        coef_h[i] = lam
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        const = const + (neg * tu).sum(-1)
        lam = pos * al + neg * su
        if beta is not None:
            lam = lam - beta[i] * signs[i].unsqueeze(1)
        const = const + lam @ tn.b[i]
        lam = lam @ tn.W[i]
    return concretize(lam, const, lo, hi, ball), lam, const, coef_h


def optimized_bounds(tn: TorchNet, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor,
                     slices: list[slice], phases: list[torch.Tensor] | None = None, ball: tuple | None = None,
                     iters: int = 20, lr: float = 0.3, base: Bounds | None = None, margin: float = 1e-7) -> OptBounds:
    """alpha-CROWN (and beta-CROWN when ``phases`` split neurons) lower bounds per output group.

    ``C`` (m, n_out), ``d`` (m,), ``slices``: the rows of each group (a conjunction). ``base``:
    the CROWN bounds of the same batch when the caller has them. Stops early once every group
    of every sub-problem is above ``margin``.
    """
    if base is None:
        base = compute_bounds(tn, lo, hi, C, d, "crown", phases, ball=ball)
    ball_t = l2_ball(ball)
    B = lo.shape[0]
    crown = torch.stack([base.spec_lower[:, s].max(1).values for s in slices], 1)       # (B, G)
    G = len(slices)
    alpha = [torch.where(lo_i.unsqueeze(1) + up_i.unsqueeze(1) > 0, 1.0, 0.0).to(lo.dtype).expand(B, G, -1).clone()
             for lo_i, up_i in zip(base.lower, base.upper)]
    signs = None if phases is None else [p.to(lo.dtype) for p in phases]
    beta = None if phases is None else [torch.zeros(B, G, p.shape[1], dtype=lo.dtype) for p in phases]
    logits = torch.zeros(B, C.shape[0], dtype=lo.dtype)
    params = alpha + (beta or []) + [logits]
    for p in params:
        p.requires_grad_(True)
    # Not rbl_core.training.fit: it ascends a bound over relaxation parameters (projected, best kept), not weights.
    opt = make_optimizer(params, lr=lr)
    best = crown.clone()
    best_params = [p.detach().clone() for p in params]
    for _ in range(iters):
        w = _group_weights(logits, slices)
        Cg, dg = _objective(C, d, w, slices)
        val, *_ = _backsub(tn, base, Cg, dg, alpha, beta, signs, lo, hi, ball_t)
        with torch.no_grad():
            # val was computed with the current, already projected parameters: keep the best per group
            better = val > best
            best = torch.where(better, val, best)
            row_better = torch.cat([better[:, g:g + 1].expand(-1, s.stop - s.start) for g, s in enumerate(slices)], 1)
            for bp, p in zip(best_params, params):
                bp.copy_(torch.where(row_better if p is logits else better.unsqueeze(-1), p.detach(), bp))
        if bool((best > margin).all()):
            break
        ascent_step(opt, val, alpha, beta or [])
    # the final bound: recomputed from the best (projected) parameters, never taken from the loop
    with torch.no_grad():
        n_a = len(alpha)
        fa = [p.clamp(0.0, 1.0) for p in best_params[:n_a]]
        fb = None if beta is None else [p.clamp(min=0.0) for p in best_params[n_a:n_a + len(beta)]]
        w = _group_weights(best_params[-1], slices)
        Cg, dg = _objective(C, d, w, slices)
        val, A, c, coef_h = _backsub(tn, base, Cg, dg, fa, fb, signs, lo, hi, ball_t)
        val = val - SLACK * (1 + val.abs())
        lower = torch.maximum(val, crown)
    return OptBounds(lower, A, c, coef_h, base)
