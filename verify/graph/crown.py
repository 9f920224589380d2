"""CROWN on the graph IR: ReLU relaxations, back-substitution to the input and concretisation.

One :class:`BoundState` holds, for a batch of B input boxes, a sound interval of every node
(IBP, tightened by CROWN at every ReLU input) and the ReLU relaxations built from them.
Back-substitution walks the nodes in reverse topological order and accumulates the
coefficients of every node (a residual add hands its coefficients to both branches); ReLUs
use CROWN's relaxation: upper line through ``(l, 0)`` and ``(u, u)``, lower line of slope
``alpha`` (CROWN's adaptive choice 0/1, or an optimised alpha in [0, 1]). Constants and the
rounding allowances (:mod:`verify.graph.rounding`) are accumulated in float64, so a bound
concretised over the box stays a sound bound of the real-valued network in float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .ir import Graph
from .linear_ops import F64, interval, magnitude, transpose
from .rounding import center_radius, gamma, unit_roundoff, widen


@dataclass
class Relax:
    """CROWN's ReLU relaxation of one node, (B, *shape) each: ``al z <= relu(z) <= su z + tu``."""

    lower_slope: torch.Tensor
    upper_slope: torch.Tensor
    upper_icpt: torch.Tensor
    unstable: torch.Tensor


def relax_relu(lo: torch.Tensor, up: torch.Tensor) -> Relax:
    """Upper line through (l, 0) and (u, u) raised by its rounding error; lower slope 1 iff u > -l."""
    unstable = (lo < 0) & (up > 0)
    active = (lo >= 0).to(lo.dtype)
    denom = torch.where(unstable, up - lo, torch.ones_like(up))
    su = torch.where(unstable, up / denom, active)
    tu = torch.where(unstable, -lo * su, torch.zeros_like(lo))
    # su and tu carry a few roundings: lift the line by that much so it stays above relu on [l, u]
    tu = torch.where(unstable, tu + 8 * unit_roundoff(lo.dtype) * (up + tu), tu)
    al = torch.where(unstable, (up > -lo).to(lo.dtype), active)
    return Relax(al, su, tu, unstable)


@dataclass
class BoundState:
    """Intervals of every node for a batch of boxes, relaxations of every ReLU, cached magnitudes."""

    graph: Graph
    lower: dict[int, torch.Tensor] = field(default_factory=dict)
    upper: dict[int, torch.Tensor] = field(default_factory=dict)
    relax: dict[int, Relax] = field(default_factory=dict)
    _mag: dict[int, torch.Tensor] = field(default_factory=dict)

    def xmax(self, i: int) -> torch.Tensor:
        """Upper bound of ``|node i|`` (B, *shape)."""
        return torch.maximum(self.lower[i].abs(), self.upper[i].abs())

    def mag(self, i: int) -> torch.Tensor:
        """:func:`magnitude` of node i at its input's xmax (cached: intervals change only via :meth:`set`)."""
        if i not in self._mag:
            node = self.graph.nodes[i]
            self._mag[i] = magnitude(node, self.xmax(node.inputs[0]))
        return self._mag[i]

    def set(self, i: int, lo: torch.Tensor, up: torch.Tensor) -> None:
        """Record node i's interval (and drop magnitudes computed from the old one)."""
        self.lower[i], self.upper[i] = lo, up
        for j in [j for j in self._mag if i in self.graph.nodes[j].inputs]:
            del self._mag[j]

    def ibp(self, i: int) -> None:
        """Interval of node i from its inputs' intervals."""
        node = self.graph.nodes[i]
        self.set(i, *interval(node, [self.lower[j] for j in node.inputs], [self.upper[j] for j in node.inputs]))


def backsubstitute(st: BoundState, start: int, A: torch.Tensor, alphas: dict[int, torch.Tensor] | None = None,
                   stop: int = 0, unit: bool = False) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]:
    """A lower bound ``sum(A * node_start) >= sum_j sum(A_j * node_j) + c`` over nodes ``j <= stop``.

    ``A``: (B, S, *shape of start). ``alphas``: lower slopes (B, S or 1, *shape) per ReLU node
    index, overriding CROWN's choice on unstable neurons. ``stop``: nodes up to this index are
    not substituted (0: down to the input; higher: a cheaper bound concretised on the
    intervals of the nodes reached, see :func:`concretize_pending`). ``unit``: every row of ``A`` has one
    non-zero entry, +-1, so the start node's step is exact (sums of one term and zeros; products
    by +-1) and needs no allowance. Returns ({j: A_j}, c, allowance), c and allowance in
    float64 (B, S).
    """
    nodes = st.graph.nodes
    B, S = A.shape[:2]
    pending = {start: A}
    c = torch.zeros(B, S, dtype=F64, device=A.device)
    err = torch.zeros_like(c)
    g1 = gamma(1, A.dtype)
    for i in range(start, stop, -1):
        A = pending.pop(i, None)
        if A is None:
            continue
        node = nodes[i]
        j0 = node.inputs[0]
        if node.op == "relu":
            r = st.relax[i]
            al = r.lower_slope.unsqueeze(1)
            if alphas is not None and i in alphas:
                al = torch.where(r.unstable.unsqueeze(1), alphas[i], al)
            pos, neg = A.clamp(min=0), A.clamp(max=0)
            ins = [pos * al + neg * r.upper_slope.unsqueeze(1)]
            c = c + (neg * r.upper_icpt.unsqueeze(1)).flatten(2).sum(-1, dtype=F64)
            err = err + g1 * (A.abs() * (st.xmax(j0) + r.upper_icpt).unsqueeze(1)).flatten(2).sum(-1, dtype=F64)
        elif node.op == "add":
            ins = [A, A]
        else:
            a_in, const, e = transpose(node, A, nodes[j0].shape, st.mag(i) if node.op != "reshape" else None)
            ins, c, err = [a_in], c + const, err + (0.0 if unit and i == start else e)
        for j, a in zip(node.inputs, ins):
            if j in pending:  # a node read twice: the sum adds one rounding per coefficient
                prev = pending[j]
                err = err + g1 * ((prev.abs() + a.abs()) * st.xmax(j).unsqueeze(1)).flatten(2).sum(-1, dtype=F64)
                pending[j] = prev + a
            else:
                pending[j] = a
    return pending, c, err


def concretize(A: torch.Tensor, c: torch.Tensor, err: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
               ) -> torch.Tensor:
    """Minimum of ``A . x + c`` over ``lo <= x <= hi`` minus the rounding allowance, float64 (B, S)."""
    A64 = A.flatten(2).to(F64)
    mid, rad = center_radius(lo.flatten(1).to(F64), hi.flatten(1).to(F64))
    val = (A64 @ mid.unsqueeze(-1)).squeeze(-1) - (A64.abs() @ rad.unsqueeze(-1)).squeeze(-1) + c
    mag = (A64.abs() @ (mid.abs() + rad).unsqueeze(-1)).squeeze(-1) + c.abs()
    return val - err - gamma(A64.shape[-1], F64) * mag


def concretize_pending(st: BoundState, pending: dict[int, torch.Tensor], c: torch.Tensor, err: torch.Tensor
                       ) -> torch.Tensor:
    """:func:`concretize` of ``sum_j A_j . node_j + c`` with each node on its own interval."""
    zero = torch.zeros_like(c)
    total = c - err
    for j, A in pending.items():
        total = total + concretize(A, zero, zero, st.lower[j], st.upper[j])
    return total


def to_lower(v64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float64 lower bound in ``dtype``, rounded down (the cast rounds to nearest)."""
    v = v64.to(dtype)
    return widen(v, v, 0.0)[0] if dtype != F64 else v


def crown_rows(st: BoundState, start: int, A: torch.Tensor, alphas: dict | None = None, unit: bool = False,
               stop: int = 0) -> torch.Tensor:
    """Lower bounds (B, S) in the state's dtype of ``sum(A * node_start)`` over the input boxes."""
    return to_lower(concretize_pending(st, *backsubstitute(st, start, A, alphas, stop, unit)), A.dtype)


def one_step_rows(st: BoundState, start: int, A: torch.Tensor) -> torch.Tensor | None:
    """The same rows bounded through the start node only, on its input's interval (None for add/relu)."""
    node = st.graph.nodes[start]
    if node.op in ("relu", "add", "input"):
        return None
    return crown_rows(st, start, A, stop=start - 1)


def unit_rows(idx: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Rows ``+e_i`` then ``-e_i`` for the flat indices ``idx`` (B, K): (B, 2K, *shape)."""
    B, K = idx.shape
    n = 1
    for s in shape:
        n *= s
    A = torch.zeros(B, 2, K, n, dtype=dtype, device=idx.device)
    A[:, 0].scatter_(2, idx.unsqueeze(-1), 1.0)
    A[:, 1].scatter_(2, idx.unsqueeze(-1), -1.0)
    return A.reshape((B, 2 * K) + tuple(shape))


def unstable_index(lo: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Flat indices (B, K) covering every box's unstable neurons (K = the most any box has)."""
    uns = ((lo < 0) & (up > 0)).flatten(1)
    K = int(uns.sum(1).max()) if uns.numel() else 0
    return torch.topk(uns.to(torch.int8), K, dim=1).indices if K else uns.new_zeros((lo.shape[0], 0), dtype=torch.long)


def all_index(lo: torch.Tensor) -> torch.Tensor:
    """Flat indices (B, n) of every neuron."""
    n = lo[0].numel()
    return torch.arange(n, device=lo.device).expand(lo.shape[0], n)


def tighten_node(st: BoundState, k: int, idx: torch.Tensor, chunk: int, alphas_of=None, stop: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN bounds of node k's neurons ``idx`` (B, K), ``chunk`` rows per back-substitution.

    ``stop``: substitute only down to that node (:func:`backsubstitute`), a cheaper bound.
    ``alphas_of(rows)``: optional, the alphas dict for the rows ``rows`` (a slice of 0..K-1).
    Returns the interval of node k intersected with the new bounds (not yet recorded).
    """
    shape = st.graph.nodes[k].shape
    lo, up = st.lower[k].flatten(1), st.upper[k].flatten(1)
    K = idx.shape[1]
    step = max(1, chunk // 2)
    for s in range(0, K, step):
        sel = idx[:, s:s + step]
        A = unit_rows(sel, shape, lo.dtype)
        v = crown_rows(st, k, A, None if alphas_of is None else alphas_of(slice(s, s + sel.shape[1])), unit=True,
                       stop=stop)
        n = sel.shape[1]
        lo = lo.scatter(1, sel, torch.maximum(lo.gather(1, sel), v[:, :n]))
        up = up.scatter(1, sel, torch.minimum(up.gather(1, sel), -v[:, n:]))
    return lo.reshape(st.lower[k].shape), up.reshape(st.upper[k].shape)
