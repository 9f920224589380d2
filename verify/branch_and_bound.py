"""Branch and bound: input splitting (low-dimensional inputs) and ReLU splitting, Z3 at the leaves.

Both searches process a *batch* of sub-problems per step with one vectorised bound
computation (:func:`verify.bounds.compute_bounds`). A sub-problem is closed when for every
output group some row has a lower bound above ``margin``. Open sub-problems first try the
minimiser of their linear lower bound and their centre as counterexamples, then either go
to Z3 (few unstable ReLUs left, or too deep) or are split: input boxes along the dimension
with the largest ``|A_j| * width_j`` (the influence of that input on the bound, as in
ReluVal's smear), ReLU domains on the unstable neuron with the largest relaxation area
times its outgoing weight. Given unbounded time both are complete: the Z3 leaves are exact.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import smt
from .bounds import TorchNet, compute_bounds
from .spec import Term


@dataclass
class SearchResult:
    """Outcome of one term's search: ``holds``, ``violated`` (with ``x``) or ``unknown``."""

    status: str
    x: np.ndarray | None = None
    reason: str = ""
    stats: dict = field(default_factory=dict)


def _stack_groups(term: Term) -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    rows, rhs, slices, i = [], [], [], 0
    for C, d in term.groups:
        rows.append(C)
        rhs.append(d)
        slices.append(slice(i, i + C.shape[0]))
        i += C.shape[0]
    return torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(rhs)), slices


def _group_status(spec_lower: torch.Tensor, slices: list[slice], margin: float) -> torch.Tensor:
    """(B, G) bool: group refuted (some row's lower bound > margin)."""
    return torch.stack([(spec_lower[:, s] > margin).any(1) for s in slices], dim=1)


def _combine_rows(A: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, iters: int = 25
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best lower bound of ``max_{x in box} min_r`` ... for a conjunction of rows ``A_r x + c_r <= 0``.

    The conjunction is infeasible on the box if some ``lam >= 0`` (summing to 1) has
    ``min_x sum_r lam_r (A_r x + c_r) > 0``; any ``lam`` gives a valid bound (weak duality),
    so a few mirror-ascent steps on the simplex suffice. Returns (bound (B,), argmin corner (B, n0)).
    """
    B, m, n0 = A.shape
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    lam = torch.full((B, m), 1.0 / m, dtype=A.dtype)
    best = torch.full((B,), -float("inf"), dtype=A.dtype)
    best_x = mid.clone()
    step = 1.0
    for _ in range(iters):
        a = (lam.unsqueeze(-1) * A).sum(1)                       # (B, n0)
        x = torch.where(a > 0, lo, hi)                           # minimiser of the combination
        val = (lam * c).sum(1) + (a * mid).sum(1) - (a.abs() * rad).sum(1)
        better = val > best
        best = torch.where(better, val, best)
        best_x = torch.where(better.unsqueeze(1), x, best_x)
        g = (A @ x.unsqueeze(-1)).squeeze(-1) + c                # supergradient: row values at x
        scale = g.abs().amax(1, keepdim=True).clamp(min=1e-12)
        lam = lam * torch.exp(step * g / scale)
        lam = lam / lam.sum(1, keepdim=True)
        step *= 0.9
    return best, best_x


def _refute_conjunctions(bd, refuted, slices, lo, hi, margin):
    """Close multi-row groups by a combination of their rows (updates ``refuted`` in place).

    Returns the combination's minimising corners (B, G, n0) as extra counterexample candidates.
    """
    if all(s.stop - s.start == 1 for s in slices):
        return None
    corners = []
    for g, s in enumerate(slices):
        if s.stop - s.start == 1:
            corners.append((lo + hi) / 2)
            continue
        todo = torch.nonzero(~refuted[:, g]).squeeze(1)
        x = (lo + hi) / 2
        if todo.numel():
            val, xg = _combine_rows(bd.spec_A[todo][:, s], bd.spec_c[todo][:, s], lo[todo], hi[todo])
            refuted[todo, g] = val > margin
            x = x.clone()
            x[todo] = xg
        corners.append(x)
    return torch.stack(corners, 1)


def _candidates(lo, hi, A, spec_lower, slices, refuted):
    """Per box: centre and, per open group, the corner minimising its tightest row's linear bound."""
    cands = [(lo + hi) / 2]
    for g, s in enumerate(slices):
        r = spec_lower[:, s].argmax(1) + s.start
        a = A[torch.arange(A.shape[0]), r]
        cands.append(torch.where(a > 0, lo, hi))
    return torch.stack(cands, 1)  # (B, 1 + G, n0)


def _local_attack(tn: TorchNet, lo, hi, x0, C, d, slices, steps: int = 8) -> torch.Tensor:
    """A few batched signed-gradient steps inside each box from ``x0`` (B, K, n0); returns all iterates."""
    B, K, n0 = x0.shape
    lo_k, hi_k = lo.unsqueeze(1).expand(-1, K, -1), hi.unsqueeze(1).expand(-1, K, -1)
    outs = []
    for s in slices:
        x = x0.clone()
        step = (hi_k - lo_k) / 4
        for _ in range(steps):
            x.requires_grad_(True)
            y = tn.forward(x.reshape(-1, n0))
            m = (y @ C[s].T - d[s]).max(1).values
            (g,) = torch.autograd.grad(m.sum(), x)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x - step * g.sign(), lo_k), hi_k)
                outs.append(x)
            step = step / 2
    return torch.cat(outs, 1).detach()


def _find_violation(tn: TorchNet, pts: torch.Tensor, C: torch.Tensor, d: torch.Tensor, slices) -> np.ndarray | None:
    B, K, n0 = pts.shape
    flat = pts.reshape(-1, n0)
    val = tn.forward(flat) @ C.T - d
    for s in slices:
        bad = torch.nonzero(val[:, s].max(1).values <= 0)
        if bad.numel():
            return flat[bad[0, 0]].numpy().copy()
    return None


def input_split(tn: TorchNet, term: Term, deadline: float, method: str = "crown", batch: int = 256,
                margin: float = 1e-7, width_mix: float = 0.25, leaf_unstable: int = 0, max_depth: int = 80,
                z3_timeout: float = 5.0, check_cex=None, backsub_depth: int | None = None, attack_steps: int = 6) -> SearchResult:
    """Prove or refute one term by splitting its input box (complete with the Z3 leaves)."""
    C, d, slices = _stack_groups(term)
    w0 = torch.from_numpy(term.hi - term.lo).clamp(min=1e-30)
    lo_stack = [torch.from_numpy(term.lo).reshape(1, -1)]
    hi_stack = [torch.from_numpy(term.hi).reshape(1, -1)]
    depth_stack = [torch.zeros(1, dtype=torch.int64)]
    n_boxes = n_z3 = 0
    stats: dict = {}
    while lo_stack:
        if time.monotonic() > deadline:
            left = sum(x.shape[0] for x in lo_stack)
            return SearchResult("unknown", reason=f"timeout with {left} open boxes after {n_boxes}",
                                stats={"boxes": n_boxes, "z3_leaves": n_z3})
        lo, hi, depth = _pop(lo_stack, hi_stack, depth_stack, batch)
        n_boxes += lo.shape[0]
        bd = compute_bounds(tn, lo, hi, C, d, method, backsub_depth=backsub_depth)
        refuted = _group_status(bd.spec_lower, slices, margin)
        extra = _refute_conjunctions(bd, refuted, slices, lo, hi, margin)
        open_ = ~(refuted.all(1) | bd.infeasible)
        if not open_.any():
            continue
        idx = torch.nonzero(open_).squeeze(1)
        lo, hi, depth = lo[idx], hi[idx], depth[idx]
        A, low = bd.spec_A[idx], bd.spec_lower[idx]
        cands = _candidates(lo, hi, A, low, slices, refuted[idx])
        if extra is not None:
            cands = torch.cat([cands, extra[idx]], 1)
        if attack_steps:
            # attack from the most promising candidate only (the last: combination corner or
            # the last group's corner); cheap next to the bound computation
            cands = torch.cat([cands, _local_attack(tn, lo, hi, cands[:, -1:], C, d, slices, attack_steps)], 1)
        x = _find_violation(tn, cands, C, d, slices)
        if x is not None and (check_cex is None or check_cex(x)):
            return SearchResult("violated", x, stats={"boxes": n_boxes, "z3_leaves": n_z3})
        unstable = sum(((l_[idx] < 0) & (u_[idx] > 0)).sum(1) for l_, u_ in zip(bd.lower, bd.upper))
        leaf = (unstable <= leaf_unstable) | (depth >= max_depth)
        for i in torch.nonzero(leaf).squeeze(1).tolist():
            n_z3 += 1
            res = _z3_leaf(tn, term, lo[i].numpy(), hi[i].numpy(), [l_[idx[i]].numpy() for l_ in bd.lower],
                           [u_[idx[i]].numpy() for u_ in bd.upper], refuted[idx[i]], margin,
                           min(z3_timeout, max(0.1, deadline - time.monotonic())), check_cex)
            if res.status == "violated":
                res.stats = {"boxes": n_boxes, "z3_leaves": n_z3}
                return res
            if res.status == "unknown":
                if depth[i] >= max_depth:
                    return SearchResult("unknown", reason=f"Z3 leaf undecided at depth {int(depth[i])}: {res.reason}",
                                        stats={"boxes": n_boxes, "z3_leaves": n_z3})
                leaf[i] = False  # keep splitting: a smaller box is easier for Z3
        keep = torch.nonzero(~leaf).squeeze(1)
        if keep.numel() == 0:
            continue
        lo, hi, depth, A, low = lo[keep], hi[keep], depth[keep], A[keep], low[keep]
        ref = refuted[idx][keep]
        width = hi - lo
        score = torch.zeros_like(lo)
        for g, s in enumerate(slices):
            r = low[:, s].argmax(1) + s.start
            a = A[torch.arange(A.shape[0]), r].abs()
            score += torch.where(ref[:, g:g + 1], torch.zeros_like(a), a) * width
        # the bound's sensitivity alone can starve a wide dimension whose effect hides in the
        # ReLU relaxations; weighting by the relative width keeps every dimension shrinking
        score = (score + 1e-30) * (width / w0) ** width_mix
        dim = score.argmax(1)
        mid = (lo[torch.arange(lo.shape[0]), dim] + hi[torch.arange(lo.shape[0]), dim]) / 2
        lo2, hi1 = lo.clone(), hi.clone()
        hi1[torch.arange(lo.shape[0]), dim] = mid
        lo2[torch.arange(lo.shape[0]), dim] = mid
        lo_stack += [lo, lo2]
        hi_stack += [hi1, hi]
        depth_stack += [depth + 1, depth + 1]
    return SearchResult("holds", stats={"boxes": n_boxes, "z3_leaves": n_z3})


def _pop(lo_stack, hi_stack, depth_stack, batch):
    los, his, ds, n = [], [], [], 0
    while lo_stack and n < batch:
        lo, hi, dp = lo_stack.pop(), hi_stack.pop(), depth_stack.pop()
        take = min(batch - n, lo.shape[0])
        if take < lo.shape[0]:
            lo_stack.append(lo[take:])
            hi_stack.append(hi[take:])
            depth_stack.append(dp[take:])
        los.append(lo[:take])
        his.append(hi[:take])
        ds.append(dp[:take])
        n += take
    return torch.cat(los), torch.cat(his), torch.cat(ds)


def _z3_leaf(tn, term, lo, hi, lower, upper, refuted, margin, timeout, check_cex, phases=None) -> SearchResult:
    """Decide the still-open groups of one sub-problem exactly with Z3."""
    for g, (C, d) in enumerate(term.groups):
        if bool(refuted[g]):
            continue
        st, x = smt.check_group(tn.net, lo, hi, C, d, margin, timeout, lower, upper, phases)
        if st == smt.SAT:
            if check_cex is None or check_cex(x):
                return SearchResult("violated", x)
            # Z3 found a point only within the margin: look for a strict one
            st2, x2 = smt.check_group(tn.net, lo, hi, C, d, -margin, timeout, lower, upper, phases)
            if st2 == smt.SAT and (check_cex is None or check_cex(x2)):
                return SearchResult("violated", x2)
            return SearchResult("unknown", reason="a point within the float margin of the boundary exists")
        if st == smt.UNKNOWN:
            return SearchResult("unknown", reason="Z3 timeout")
    return SearchResult("holds")


def relu_split(tn: TorchNet, term: Term, deadline: float, batch: int = 64, margin: float = 1e-7,
               leaf_unstable: int = 12, z3_timeout: float = 2.0, check_cex=None) -> SearchResult:
    """Prove or refute one term by splitting unstable ReLUs (for higher-dimensional inputs)."""
    C, d, slices = _stack_groups(term)
    lo0 = torch.from_numpy(term.lo).reshape(1, -1)
    hi0 = torch.from_numpy(term.hi).reshape(1, -1)
    sizes = [w.shape[0] for w in tn.W[:-1]]
    domains = [[torch.zeros(1, n, dtype=torch.int8) for n in sizes]]
    n_dom = n_z3 = 0
    while domains:
        if time.monotonic() > deadline:
            return SearchResult("unknown", reason=f"timeout with {sum(p[0].shape[0] for p in domains)} open "
                                                  f"ReLU domains after {n_dom}", stats={"domains": n_dom})
        phases = _pop_phases(domains, batch)
        B = phases[0].shape[0]
        n_dom += B
        bd = compute_bounds(tn, lo0.expand(B, -1), hi0.expand(B, -1), C, d, "crown", phases)
        refuted = _group_status(bd.spec_lower, slices, margin)
        open_ = ~(refuted.all(1) | bd.infeasible)
        if not open_.any():
            continue
        idx = torch.nonzero(open_).squeeze(1)
        lo, hi = lo0.expand(idx.numel(), -1), hi0.expand(idx.numel(), -1)
        cands = _candidates(lo, hi, bd.spec_A[idx], bd.spec_lower[idx], slices, refuted[idx])
        x = _find_violation(tn, cands, C, d, slices)
        if x is not None and (check_cex is None or check_cex(x)):
            return SearchResult("violated", x, stats={"domains": n_dom, "z3_leaves": n_z3})
        children = [[] for _ in sizes]
        for i in idx.tolist():
            lows = [l_[i] for l_ in bd.lower]
            ups = [u_[i] for u_ in bd.upper]
            ph = [p[i] for p in phases]
            unst = [((l_ < 0) & (u_ > 0) & (p == 0)) for l_, u_, p in zip(lows, ups, ph)]
            n_unst = int(sum(u.sum() for u in unst))
            if n_unst <= leaf_unstable:
                n_z3 += 1
                res = _z3_leaf(tn, term, term.lo, term.hi, [v.numpy() for v in lows], [v.numpy() for v in ups],
                               refuted[i], margin, min(z3_timeout, max(0.1, deadline - time.monotonic())),
                               check_cex, [p.numpy() for p in ph])
                if res.status == "violated":
                    return res
                if res.status == "holds":
                    continue
                if n_unst == 0:
                    return SearchResult("unknown", reason=res.reason, stats={"domains": n_dom})
            # branch on the neuron with the largest relaxation area times its outgoing weight
            best, best_k, best_j = -1.0, 0, 0
            for k, (l_, u_, un) in enumerate(zip(lows, ups, unst)):
                if not un.any():
                    continue
                area = torch.where(un, -l_ * u_ / (u_ - l_).clamp(min=1e-12), torch.zeros_like(l_))
                area = area * tn.W[k + 1].abs().sum(0)
                j = int(area.argmax())
                if float(area[j]) > best:
                    best, best_k, best_j = float(area[j]), k, j
            for sign in (1, -1):
                child = [p.clone() for p in ph]
                child[best_k][best_j] = sign
                for k in range(len(sizes)):
                    children[k].append(child[k])
        if children[0]:
            domains.append([torch.stack(c) for c in children])
    return SearchResult("holds", stats={"domains": n_dom, "z3_leaves": n_z3})


def _pop_phases(domains, batch):
    top = domains.pop()
    if top[0].shape[0] > batch:
        domains.append([p[batch:] for p in top])
        top = [p[:batch] for p in top]
    return top
