"""Interval and symbolic back-substitution (DeepPoly / CROWN) bounds, batched over input boxes.

For a batch of ``B`` boxes, every hidden layer's pre-activation bounds are obtained by
substituting linear relaxations of the earlier ReLUs back to the input (DeepPoly: upper
line through ``(l, 0)`` and ``(u, u)``, lower line of slope 0 or 1 whichever has the smaller
area) and concretising over the box. The output specification rows ``C y - d`` are bounded
the same way, which yields for every box a linear lower bound ``A x + c <= C f(x) - d``: its
value decides the box, its coefficients guide input splitting and its minimiser is a
cheap counterexample candidate.

Floating point: computations run in float64 and every intermediate bound is widened by
``SLACK`` (relative + absolute), so the sound real-valued bounds survive rounding; callers
additionally demand ``lower > margin`` before they call a property proved.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .network import Network
from .s_shaped import activate, relax_s_shaped

SLACK = 1e-9


class TorchNet:
    """The network's weights as float64 torch tensors (shared by all bound computations)."""

    def __init__(self, net: Network):
        self.net = net
        self.W = [torch.from_numpy(w) for w in net.weights]
        self.b = [torch.from_numpy(b) for b in net.biases]
        self.L = len(self.W)
        self.act = list(net.nonlinearities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concrete forward pass on ``(B, n0)``."""
        h = x
        for i in range(self.L):
            h = h @ self.W[i].T + self.b[i]
            if i < self.L - 1:
                h = activate(self.act[i], h)
        return h


@dataclass
class Bounds:
    """Bounds for a batch of boxes."""

    lower: list[torch.Tensor]        # pre-activation lower bounds of hidden layers, (B, n_k) each
    upper: list[torch.Tensor]
    spec_lower: torch.Tensor         # (B, m): lower bound of each row of C f(x) - d
    spec_A: torch.Tensor | None      # (B, m, n0): linear lower bound coefficients (None for intervals)
    spec_c: torch.Tensor | None      # (B, m)
    infeasible: torch.Tensor         # (B,) bool: a ReLU split made the box empty

    def unstable_count(self) -> torch.Tensor:
        """Number of unstable hidden ReLUs per box."""
        return sum(((lo < 0) & (up > 0)).sum(1) for lo, up in zip(self.lower, self.upper))


def _widen(lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return lo - SLACK * (1 + lo.abs()), up + SLACK * (1 + up.abs())


def _relax(lo: torch.Tensor, up: torch.Tensor):
    """Slopes/intercepts of the DeepPoly relaxation: upper su*z+tu, lower al*z."""
    active = lo >= 0
    unstable = (lo < 0) & (up > 0)
    denom = torch.where(unstable, up - lo, torch.ones_like(up))
    su = torch.where(unstable, up / denom, active.to(lo.dtype))
    tu = torch.where(unstable, -lo * su, torch.zeros_like(lo))
    al = torch.where(unstable, (up > -lo).to(lo.dtype), active.to(lo.dtype))
    return su, tu, al


def _relax_layer(act: str, lo: torch.Tensor, up: torch.Tensor):
    """The layer's relaxation: ReLU as (su, tu, al), Sigmoid/Tanh with a lower intercept as (su, tu, al, tl)."""
    return _relax(lo, up) if act == "relu" else relax_s_shaped(act, lo, up, SLACK)


def _concretize(A: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, ball=None) -> torch.Tensor:
    """Minimum of ``A x + c`` over the box, or over box ∩ L2 ball ``ball=(center, eps)`` (tensors)."""
    mid = ((lo + hi) / 2).unsqueeze(-1)
    rad = ((hi - lo) / 2).unsqueeze(-1)
    box = (A @ mid).squeeze(-1) - (A.abs() @ rad).squeeze(-1) + c
    if ball is None:
        return box
    # dual norm: min over ||x - x0||_2 <= eps of a.x is a.x0 - eps ||a||_2; both are lower
    # bounds on the intersection, so the larger one is too
    center, eps = ball
    l2 = A @ center + c - eps * torch.linalg.vector_norm(A, dim=-1)
    return torch.maximum(box, l2)


def l2_ball(ball: tuple | None) -> tuple[torch.Tensor, float] | None:
    """``("L2", center, eps)`` (a :class:`verify.spec.Property` ball) as (float64 tensor, eps); None stays None."""
    if ball is None:
        return None
    norm, center, eps = ball
    if norm != "L2":
        raise ValueError(f"only an L2 ball can be passed to the bounds, got {norm!r}")
    return torch.as_tensor(np.asarray(center, dtype=np.float64)).reshape(-1), float(eps)


concretize = _concretize


def _backward(tn: TorchNet, lam: torch.Tensor, j: int, relax: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower-bound ``lam @ z_j`` (z_j = pre-activation of layer j) by a linear function of the input."""
    return _backward_hidden(tn, lam @ tn.W[j], lam @ tn.b[j], j - 1, relax)


def _backward_hidden(tn: TorchNet, lam: torch.Tensor, const: torch.Tensor, k: int, relax: list,
                     syms: list | None = None, depth: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower-bound ``lam @ h_k + const`` (h_k = post-ReLU of hidden layer k; k = -1 is the input).

    With ``depth``, substitution stops after that many layers and finishes with the forward
    symbolic equations ``syms`` of the layer reached (cheaper, slightly looser).
    """
    stop = -1 if depth is None else max(-1, k - depth)
    for i in range(k, stop, -1):
        su, tu, al = relax[i][:3]
        neg = lam.clamp(max=0)
        const = const + (neg @ tu.unsqueeze(-1)).squeeze(-1)
        if len(relax[i]) > 3:  # Sigmoid/Tanh: the lower line has an intercept too
            const = const + (lam.clamp(min=0) @ relax[i][3].unsqueeze(-1)).squeeze(-1)
        # lam * al where lam > 0, lam * su where lam < 0
        lam = lam * al.unsqueeze(1) + neg * (su - al).unsqueeze(1)
        const = const + lam @ tn.b[i]
        lam = lam @ tn.W[i]
    if stop >= 0:
        sym_l, sym_u = syms[stop]
        eq = lam.clamp(min=0) @ sym_l + lam.clamp(max=0) @ sym_u
        lam, const = eq[..., :-1], const + eq[..., -1]
    return lam, const


def _symbolic_eqs(tn: TorchNet, k: int, sym_l, sym_u):
    """Linear lower/upper functions (.., n_k, n0 + 1) of the input bounding pre-activation z_k."""
    if k == 0:
        wb = torch.cat([tn.W[0], tn.b[0].unsqueeze(1)], dim=1).unsqueeze(0)
        return wb, wb
    wp, wn = tn.W[k].clamp(min=0), tn.W[k].clamp(max=0)
    eq_l = torch.matmul(wp, sym_l) + torch.matmul(wn, sym_u)
    eq_u = torch.matmul(wp, sym_u) + torch.matmul(wn, sym_l)
    eq_l[..., -1] += tn.b[k]
    eq_u[..., -1] += tn.b[k]
    return eq_l, eq_u


def _symbolic_layer(tn: TorchNet, k, sym_l, sym_u, h_lo, h_hi, lo, hi, ball=None):
    """Bounds of z_k from the forward symbolic equations, intersected with interval bounds."""
    eq_l, eq_u = _symbolic_eqs(tn, k, sym_l, sym_u)
    z_lo = _concretize(eq_l[..., :-1], eq_l[..., -1], lo, hi, ball)
    z_hi = -_concretize(-eq_u[..., :-1], -eq_u[..., -1], lo, hi, ball)
    wp, wn = tn.W[k].clamp(min=0), tn.W[k].clamp(max=0)
    z_lo = torch.maximum(z_lo, h_lo @ wp.T + h_hi @ wn.T + tn.b[k])
    z_hi = torch.minimum(z_hi, h_hi @ wp.T + h_lo @ wn.T + tn.b[k])
    return z_lo, z_hi, (eq_l, eq_u)


def _symbolic_relu(eqs, rel):
    """Forward symbolic equations of h_k = ReLU(z_k) given z_k's equations and relaxation."""
    eq_l, eq_u = eqs
    su, tu, al = rel[:3]
    new_l = eq_l * al.unsqueeze(-1)
    new_u = eq_u * su.unsqueeze(-1)
    new_u[..., -1] += tu
    if len(rel) > 3:  # slopes are >= 0 for every supported activation, so eq_l stays a lower bound
        new_l[..., -1] += rel[3]
    return new_l, new_u


def compute_bounds(tn: TorchNet, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor,
                   method: str = "crown", phases: list[torch.Tensor] | None = None,
                   backsub_depth: int | None = None, ball: tuple | None = None) -> Bounds:
    """Bounds of ``C f(x) - d`` over each box ``[lo[b], hi[b]]``.

    ``C``: (m, n_out) or (B, m, n_out); ``d``: (m,) or (B, m). ``method``: "crown"
    (back-substitution for every layer), "symbolic" (hidden layers by forward symbolic
    propagation of lower/upper linear functions of the input, as in ReluVal/Neurify; much
    cheaper for low-dimensional inputs; output rows still by back-substitution) or "interval". ``phases``: optional per hidden layer (B, n_k) int8
    tensors with +1 (ReLU forced active), -1 (forced inactive), 0 (free), for ReLU splitting.
    ``backsub_depth``: for hidden layers, substitute back at most this many layers, then use
    the forward symbolic equations (None: all the way to the input). ``ball``: an optional
    ``("L2", center, eps)``; linear bounds are then minimised over box ∩ ball exactly (dual
    norm), interval steps still see the box.
    """
    if method not in ("crown", "symbolic", "interval"):
        raise ValueError(f"method must be 'crown', 'symbolic' or 'interval', got {method!r}")
    ball = l2_ball(ball)
    B = lo.shape[0]
    infeasible = torch.zeros(B, dtype=torch.bool)
    lowers, uppers, relax = [], [], []
    h_lo, h_hi = lo, hi
    sym_l = sym_u = None  # forward symbolic equations (B, n_k, n0 + 1) of the post-ReLU values
    syms: list = []
    for k in range(tn.L - 1):
        if method == "symbolic" and k:
            z_lo, z_hi, eqs = _symbolic_layer(tn, k, sym_l, sym_u, h_lo, h_hi, lo, hi, ball)
        elif method == "interval" or k == 0:
            wp, wn = tn.W[k].clamp(min=0), tn.W[k].clamp(max=0)
            z_lo = h_lo @ wp.T + h_hi @ wn.T + tn.b[k]
            z_hi = h_hi @ wp.T + h_lo @ wn.T + tn.b[k]
            if k == 0 and ball is not None:
                zb = tn.W[0] @ ball[0] + tn.b[0]
                rb = ball[1] * torch.linalg.vector_norm(tn.W[0], dim=1)
                z_lo, z_hi = torch.maximum(z_lo, zb - rb), torch.minimum(z_hi, zb + rb)
        else:
            # cheap candidates first (symbolic forward), then back-substitution only for the
            # neurons those leave unstable: stable neurons cannot get a better relaxation
            z_lo, z_hi, eqs = _symbolic_layer(tn, k, sym_l, sym_u, h_lo, h_hi, lo, hi, ball)
            # a Sigmoid/Tanh relaxation tightens with every neuron's interval, a ReLU's only when unstable
            unstable = (z_lo < 0) & (z_hi > 0) if tn.act[k] == "relu" else torch.ones_like(z_lo, dtype=torch.bool)
            K = int(unstable.sum(1).max())
            if K:
                idx = torch.topk(unstable.to(lo.dtype), K, dim=1).indices        # (B, K)
                rows = tn.W[k][idx]                                              # (B, K, n_{k-1})
                lam = torch.cat([rows, -rows], dim=1)
                const = torch.cat([tn.b[k][idx], -tn.b[k][idx]], dim=1)
                A, c = _backward_hidden(tn, lam, const, k - 1, relax, syms, backsub_depth)
                both = _concretize(A, c, lo, hi, ball)
                z_lo = z_lo.scatter(1, idx, torch.maximum(z_lo.gather(1, idx), both[:, :K]))
                z_hi = z_hi.scatter(1, idx, torch.minimum(z_hi.gather(1, idx), -both[:, K:]))
        z_lo, z_hi = _widen(z_lo, z_hi)
        if phases is not None and tn.act[k] == "relu":
            ph = phases[k]
            z_lo = torch.where(ph > 0, z_lo.clamp(min=0), z_lo)
            z_hi = torch.where(ph < 0, z_hi.clamp(max=0), z_hi)
            infeasible |= (z_lo > z_hi).any(1)
            z_hi = torch.maximum(z_hi, z_lo)
        lowers.append(z_lo)
        uppers.append(z_hi)
        relax.append(_relax_layer(tn.act[k], z_lo, z_hi))
        if method != "interval":
            sym_l, sym_u = _symbolic_relu(eqs if k else _symbolic_eqs(tn, 0, None, None), relax[-1])
            syms.append((sym_l, sym_u))
        h_lo, h_hi = activate(tn.act[k], z_lo), activate(tn.act[k], z_hi)  # every activation is monotone
    Cb = C if C.dim() == 3 else C.unsqueeze(0)
    db = d if d.dim() == 2 else d.unsqueeze(0)
    if method == "interval":
        M = Cb @ tn.W[-1]
        Mp, Mn = M.clamp(min=0), M.clamp(max=0)
        low = (Mp @ h_lo.unsqueeze(-1) + Mn @ h_hi.unsqueeze(-1)).squeeze(-1) + Cb @ tn.b[-1] - db
        return Bounds(lowers, uppers, low.expand(B, -1), None, None, infeasible)
    lam = Cb.expand(B, -1, -1) if Cb.shape[0] != B else Cb
    A, c = _backward(tn, lam, tn.L - 1, relax)
    A = A.expand(B, -1, -1) if A.shape[0] != B else A
    c = (c - db).expand(B, -1)
    low = _concretize(A, c, lo, hi, ball)
    # the bound in the last hidden layer's interval form is sometimes tighter
    M = Cb @ tn.W[-1]
    Mp, Mn = M.clamp(min=0), M.clamp(max=0)
    ibp = (Mp @ h_lo.unsqueeze(-1) + Mn @ h_hi.unsqueeze(-1)).squeeze(-1) + Cb @ tn.b[-1] - db
    low = torch.maximum(low, ibp)
    low = low - SLACK * (1 + low.abs())
    return Bounds(lowers, uppers, low, A, c, infeasible)


def bounds_numpy(net: Network, lo: np.ndarray, hi: np.ndarray, method: str = "crown"
                 ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Convenience: per-layer (lower, upper) pre-activation bounds and output bounds for one box."""
    tn = TorchNet(net)
    lo_t = torch.as_tensor(np.asarray(lo, dtype=np.float64)).reshape(1, -1)
    hi_t = torch.as_tensor(np.asarray(hi, dtype=np.float64)).reshape(1, -1)
    m = net.output_dim
    eye = torch.eye(m, dtype=torch.float64)
    C = torch.cat([eye, -eye])
    b = compute_bounds(tn, lo_t, hi_t, C, torch.zeros(2 * m, dtype=torch.float64), method)
    out_lo = b.spec_lower[0, :m].numpy()
    out_hi = -b.spec_lower[0, m:].numpy()
    return [x[0].numpy() for x in b.lower], [x[0].numpy() for x in b.upper], out_lo, out_hi
