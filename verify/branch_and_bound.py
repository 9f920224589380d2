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
from .alpha_crown import optimized_bounds
from .bounds import TorchNet, compute_bounds, l2_ball
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
                z3_timeout: float = 5.0, check_cex=None, backsub_depth: int | None = None, attack_steps: int = 6,
                ball: tuple | None = None, bounds: str = "crown", split_rule: str = "trial", alpha_iters: int = 10
                ) -> SearchResult:
    """Prove or refute one term by splitting its input box (complete with the Z3 leaves).

    ``bounds``: "crown", or "alpha" (boxes CROWN leaves open get alpha-CROWN bounds).
    ``split_rule``: "trial" (bound every box's two halves along each dimension, in one batch,
    and split where the worse half's bound gains most; the relatively widest dimension when
    no split gains) or "smear" (``|A_j| * width_j`` weighted by ``width_mix``, no trials).

    A Z3 leaf that stays undecided never ends the search: the box is split again and its
    halves get twice the Z3 time (``tries`` counts the attempts), so only a spent budget
    stops it (reported as a timeout).
    """
    if bounds not in ("crown", "alpha") or split_rule not in ("trial", "smear"):
        raise ValueError(f"bounds must be 'crown'/'alpha' and split_rule 'trial'/'smear', got {bounds!r}, {split_rule!r}")
    C, d, slices = _stack_groups(term)
    w0 = torch.from_numpy(term.hi - term.lo).clamp(min=1e-30)
    stack = _BoxStack(torch.from_numpy(term.lo).reshape(1, -1), torch.from_numpy(term.hi).reshape(1, -1))
    n_boxes = n_z3 = n_retry = 0
    boundary = False  # a point within the float margin was seen: never "holds" then
    while stack:
        if time.monotonic() > deadline:
            return SearchResult("unknown", reason=f"timeout with {len(stack)} open boxes after {n_boxes}",
                                stats={"boxes": n_boxes, "z3_leaves": n_z3, "z3_retries": n_retry})
        lo, hi, depth, tries = stack.pop(batch)
        n_boxes += lo.shape[0]
        bd = compute_bounds(tn, lo, hi, C, d, method, backsub_depth=backsub_depth, ball=ball)
        refuted = _group_status(bd.spec_lower, slices, margin)
        extra = _refute_conjunctions(bd, refuted, slices, lo, hi, margin)
        open_ = ~(refuted.all(1) | bd.infeasible)
        if bounds == "alpha" and open_.any():
            o = torch.nonzero(open_).squeeze(1)
            ob = optimized_bounds(tn, lo[o], hi[o], C, d, slices, ball=ball, iters=alpha_iters, margin=margin)
            refuted[o] |= ob.lower > margin
            open_ = ~(refuted.all(1) | bd.infeasible)
        if not open_.any():
            continue
        idx = torch.nonzero(open_).squeeze(1)
        lo, hi, depth, tries = lo[idx], hi[idx], depth[idx], tries[idx]
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
                           min(z3_timeout * 2.0 ** int(tries[i]), max(0.1, deadline - time.monotonic())), check_cex,
                           ball=ball)
            if res.status == "violated":
                res.stats = {"boxes": n_boxes, "z3_leaves": n_z3}
                return res
            if res.status == "unknown":
                boundary |= res.reason.startswith("boundary")
                # undecided in its time (or only a point within the float margin): split it
                # again (a smaller box is easier for Z3), past max_depth with more Z3 time for
                # the halves; the search goes on with the other boxes
                leaf[i] = False
                if depth[i] >= max_depth:
                    tries[i] += 1
                    n_retry += 1
        keep = torch.nonzero(~leaf).squeeze(1)
        if keep.numel() == 0:
            continue
        lo, hi, depth, tries, A, low = lo[keep], hi[keep], depth[keep], tries[keep], A[keep], low[keep]
        ref = refuted[idx][keep]
        if split_rule == "trial":
            dim = _trial_dim(tn, lo, hi, C, d, slices, ref, low, w0, method, backsub_depth, ball)
        else:
            dim = _smear_dim(lo, hi, A, low, slices, ref, w0, width_mix)
        stack.push_split(lo, hi, depth, tries, dim)
    stats = {"boxes": n_boxes, "z3_leaves": n_z3, "z3_retries": n_retry}
    if boundary:
        return SearchResult("unknown", reason="boundary: a point within the float margin of the boundary exists",
                            stats=stats)
    return SearchResult("holds", stats=stats)


def _smear_dim(lo, hi, A, low, slices, ref, w0, width_mix: float) -> torch.Tensor:
    """ReluVal's smear: the dimension with the largest ``|A_j| * width_j`` of the open groups' best rows."""
    width = hi - lo
    score = torch.zeros_like(lo)
    for g, s in enumerate(slices):
        r = low[:, s].argmax(1) + s.start
        a = A[torch.arange(A.shape[0]), r].abs()
        score += torch.where(ref[:, g:g + 1], torch.zeros_like(a), a) * width
    # the bound's sensitivity alone can starve a wide dimension whose effect hides in the
    # ReLU relaxations; weighting by the relative width keeps every dimension shrinking
    score = (score + 1e-30) * (width / w0) ** width_mix
    return _guard_dim(score, width, w0)


def _box_value(spec_lower: torch.Tensor, slices, ref: torch.Tensor) -> torch.Tensor:
    """(B,) the worst open group's best row bound (+inf when every group is refuted)."""
    v = torch.stack([spec_lower[:, s].max(1).values for s in slices], 1)
    return torch.where(ref, torch.full_like(v, torch.inf), v).min(1).values


def _trial_dim(tn, lo, hi, C, d, slices, ref, low, w0, method, backsub_depth, ball) -> torch.Tensor:
    """The dimension whose split gains most on the worse half (one batched bound call for all trials).

    Gains of ~0 (or only zero-width dimensions) fall back to the relatively widest
    dimension, so every split makes progress.
    """
    K, n0 = lo.shape
    rows = torch.arange(n0)
    mid = (lo + hi) / 2                                          # (K, n0)
    lo_t = lo.unsqueeze(1).expand(K, n0, n0).clone()             # [box, dim split, input]
    hi_t = hi.unsqueeze(1).expand(K, n0, n0).clone()
    hi_l, lo_r = hi_t.clone(), lo_t.clone()
    hi_l[:, rows, rows] = mid
    lo_r[:, rows, rows] = mid
    los = torch.cat([lo_t, lo_r]).reshape(-1, n0)
    his = torch.cat([hi_l, hi_t]).reshape(-1, n0)
    bd = compute_bounds(tn, los, his, C, d, method, backsub_depth=backsub_depth, ball=ball)
    ref2 = ref.repeat(2, 1).repeat_interleave(n0, 0)
    v = _box_value(bd.spec_lower, slices, ref2)
    v = torch.where(bd.infeasible, torch.full_like(v, torch.inf), v).reshape(2, K, n0)
    parent = _box_value(low, slices, ref).unsqueeze(1)
    gain = torch.minimum(v[0], v[1]) - parent                    # (K, n0)
    gain = torch.where(gain > 1e-9 * (1 + parent.abs()), gain, torch.zeros_like(gain))
    return _guard_dim(gain.clamp(max=1e30), hi - lo, w0)


def _guard_dim(score: torch.Tensor, width: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """The best-scoring dimension, never a zero-width one; the relatively widest when no score is positive.

    Splitting a dimension of zero width (or one whose midpoint rounds to an end) would
    produce a child equal to its parent and loop forever.
    """
    splittable = (width > 0) & ((width / w0) > 1e-12)
    score = torch.where(splittable, score, torch.full_like(score, -1.0))
    widest = torch.where(splittable, width / w0, torch.full_like(width, -1.0)).argmax(1)
    dim = score.argmax(1)
    flat = score.amax(1) <= 1e-30
    return torch.where(flat, widest, dim)


class _BoxStack:
    """Depth-first stack of batched open boxes with their depth and Z3 attempt counts."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor):
        z = torch.zeros(lo.shape[0], dtype=torch.int64)
        self.items: list[tuple] = [(lo, hi, z, z.clone())]

    def __len__(self) -> int:
        return sum(it[0].shape[0] for it in self.items)

    def pop(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Up to ``batch`` boxes from the top: (lo, hi, depth, tries)."""
        parts, n = [], 0
        while self.items and n < batch:
            it = self.items.pop()
            take = min(batch - n, it[0].shape[0])
            if take < it[0].shape[0]:
                self.items.append(tuple(t[take:] for t in it))
            parts.append(tuple(t[:take] for t in it))
            n += take
        return tuple(torch.cat([p[j] for p in parts]) for j in range(4))

    def push_split(self, lo, hi, depth, tries, dim) -> None:
        """Push both halves of every box along its dimension ``dim``."""
        rows = torch.arange(lo.shape[0])
        mid = (lo[rows, dim] + hi[rows, dim]) / 2
        lo2, hi1 = lo.clone(), hi.clone()
        hi1[rows, dim] = mid
        lo2[rows, dim] = mid
        self.items.append((lo, hi1, depth + 1, tries))
        self.items.append((lo2, hi, depth + 1, tries.clone()))


def _z3_leaf(tn, term, lo, hi, lower, upper, refuted, margin, timeout, check_cex, phases=None, ball=None
             ) -> SearchResult:
    """Decide the still-open groups of one sub-problem exactly with Z3."""
    for g, (C, d) in enumerate(term.groups):
        if bool(refuted[g]):
            continue
        st, x = smt.check_group(tn.net, lo, hi, C, d, margin, timeout, lower, upper, phases, ball=ball)
        if st == smt.SAT:
            if check_cex is None or check_cex(x):
                return SearchResult("violated", x)
            # Z3 found a point only within the margin: look for a strict one
            st2, x2 = smt.check_group(tn.net, lo, hi, C, d, -margin, timeout, lower, upper, phases, ball=ball)
            if st2 == smt.SAT and (check_cex is None or check_cex(x2)):
                return SearchResult("violated", x2)
            return SearchResult("unknown", reason="boundary: a point within the float margin of the boundary exists")
        if st == smt.UNKNOWN:
            # not the word "timeout": only a spent search budget is reported as one
            return SearchResult("unknown", reason="Z3 leaf undecided within its time limit")
    return SearchResult("holds")


def relu_split(tn: TorchNet, term: Term, deadline: float, batch: int = 64, margin: float = 1e-7,
               leaf_unstable: int = 12, z3_timeout: float = 2.0, check_cex=None, ball: tuple | None = None,
               bounds: str = "beta", branching: str = "babsr", iters: int = 20) -> SearchResult:
    """Prove or refute one term by splitting unstable ReLUs (for higher-dimensional inputs).

    ``bounds``: "beta" (alpha/beta-CROWN per domain, :mod:`verify.alpha_crown`) or "crown".
    ``branching``: "babsr" (the neuron whose upper relaxation costs the bound most:
    ``|min(coef_h, 0)| * intercept``, needs ``bounds="beta"``) or "area" (relaxation area times
    outgoing weight). Z3 leaves undecided in their time are retried with doubled time once
    nothing else is open; only the deadline ends the search early.
    """
    if bounds not in ("beta", "crown") or branching not in ("babsr", "area"):
        raise ValueError(f"bounds must be 'beta'/'crown' and branching 'babsr'/'area', got {bounds!r}, {branching!r}")
    C, d, slices = _stack_groups(term)
    lo0 = torch.from_numpy(term.lo).reshape(1, -1)
    hi0 = torch.from_numpy(term.hi).reshape(1, -1)
    sizes = [w.shape[0] for w in tn.W[:-1]]
    domains = [[torch.zeros(1, n, dtype=torch.int8) for n in sizes]]
    deferred: list[tuple] = []  # (lower, upper, phases, tries) of Z3 leaves undecided in their time
    n_dom = n_z3 = n_retry = 0
    boundary = False

    def stats() -> dict:
        return {"domains": n_dom, "z3_leaves": n_z3, "z3_retries": n_retry}

    def leaf(lows, ups, ph, ref, tries) -> SearchResult:
        return _z3_leaf(tn, term, term.lo, term.hi, [v.numpy() for v in lows], [v.numpy() for v in ups], ref,
                        margin, min(z3_timeout * 2.0 ** tries, max(0.1, deadline - time.monotonic())), check_cex,
                        [p.numpy() for p in ph], ball)

    while domains or deferred:
        if time.monotonic() > deadline:
            left = sum(p[0].shape[0] for p in domains) + len(deferred)
            return SearchResult("unknown", reason=f"timeout with {left} open ReLU domains after {n_dom}",
                                stats=stats())
        if not domains:
            lows, ups, ph, ref, tries = deferred.pop(0)
            n_retry += 1
            res = leaf(lows, ups, ph, ref, tries)
            if res.status == "violated":
                res.stats = stats()
                return res
            if res.status == "unknown":
                boundary |= res.reason.startswith("boundary")
                if not res.reason.startswith("boundary"):
                    deferred.append((lows, ups, ph, ref, tries + 1))
            continue
        phases = _pop_phases(domains, batch)
        B = phases[0].shape[0]
        n_dom += B
        lo, hi = lo0.expand(B, -1), hi0.expand(B, -1)
        bd = compute_bounds(tn, lo, hi, C, d, "crown", phases, ball=ball)
        if bounds == "beta":
            ob = optimized_bounds(tn, lo, hi, C, d, slices, phases, ball, iters=iters, base=bd, margin=margin)
            refuted, A_g = ob.lower > margin, ob.A
        else:
            refuted = _group_status(bd.spec_lower, slices, margin)
            _refute_conjunctions(bd, refuted, slices, lo, hi, margin)
            A_g = torch.stack([bd.spec_A[torch.arange(B), bd.spec_lower[:, s].argmax(1) + s.start]
                               for s in slices], 1)
        open_ = ~(refuted.all(1) | bd.infeasible)
        if not open_.any():
            continue
        idx = torch.nonzero(open_).squeeze(1)
        x = _find_violation(tn, _corners(lo[idx], hi[idx], A_g[idx], ball), C, d, slices)
        if x is not None and (check_cex is None or check_cex(x)):
            return SearchResult("violated", x, stats=stats())
        children = [[] for _ in sizes]
        for i in idx.tolist():
            lows = [l_[i] for l_ in bd.lower]
            ups = [u_[i] for u_ in bd.upper]
            ph = [p[i] for p in phases]
            unst = [((l_ < 0) & (u_ > 0) & (p == 0)) for l_, u_, p in zip(lows, ups, ph)]
            n_unst = int(sum(u.sum() for u in unst))
            if n_unst <= leaf_unstable:
                n_z3 += 1
                res = leaf(lows, ups, ph, refuted[i], 0)
                if res.status == "violated":
                    res.stats = stats()
                    return res
                if res.status == "holds":
                    continue
                boundary |= res.reason.startswith("boundary")
                if n_unst == 0:
                    if not res.reason.startswith("boundary"):
                        deferred.append((lows, ups, ph, refuted[i], 1))  # retried later with more time
                    continue
            if branching == "babsr" and bounds == "beta":
                worst = int(torch.where(refuted[i], torch.inf, ob.lower[i]).argmin())
                k, j = _babsr_choice(tn, lows, ups, unst, [ch[i, worst] for ch in ob.coef_h])
            else:
                k, j = _area_choice(tn, lows, ups, unst)
            for sign in (1, -1):
                child = [p.clone() for p in ph]
                child[k][j] = sign
                for layer in range(len(sizes)):
                    children[layer].append(child[layer])
        if children[0]:
            domains.append([torch.stack(c) for c in children])
    if boundary:
        return SearchResult("unknown", reason="boundary: a point within the float margin of the boundary exists",
                            stats=stats())
    return SearchResult("holds", stats=stats())


def _corners(lo, hi, A_g, ball) -> torch.Tensor:
    """Counterexample candidates per domain: the centre and each group's bound minimiser (B, 1 + G, n0)."""
    cands = [(lo + hi) / 2] + [torch.where(A_g[:, g] > 0, lo, hi) for g in range(A_g.shape[1])]
    if ball is not None:
        # the minimiser over the ball: x0 - eps a / ||a||, clipped to the box
        center, eps = l2_ball(ball)
        for g in range(A_g.shape[1]):
            a = A_g[:, g]
            x = center - eps * (1 - 1e-12) * a / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp(min=1e-30)
            cands.append(torch.minimum(torch.maximum(x, lo), hi))
    return torch.stack(cands, 1)


def _babsr_choice(tn, lows, ups, unst, coef) -> tuple[int, int]:
    """BaBSR-style: the free unstable neuron whose upper-relaxation intercept costs the bound most.

    ``coef[k]`` is the back-substituted coefficient on ``h_k`` of the worst open group; a
    negative coefficient uses the upper line ``u (z - l) / (u - l)``, whose intercept
    ``-l u / (u - l)`` splitting removes. The area rule breaks ties (and zero scores).
    """
    best, best_k, best_j = -1.0, 0, 0
    for k, (l_, u_, un) in enumerate(zip(lows, ups, unst)):
        if not un.any():
            continue
        icpt = -l_ * u_ / (u_ - l_).clamp(min=1e-12)
        score = (-coef[k]).clamp(min=0) * icpt + 1e-6 * icpt * tn.W[k + 1].abs().sum(0)
        score = torch.where(un, score, torch.full_like(score, -1.0))
        j = int(score.argmax())
        if float(score[j]) > best:
            best, best_k, best_j = float(score[j]), k, j
    return best_k, best_j


def _area_choice(tn, lows, ups, unst) -> tuple[int, int]:
    """The unstable neuron with the largest relaxation area times its outgoing weight."""
    best, best_k, best_j = -1.0, 0, 0
    for k, (l_, u_, un) in enumerate(zip(lows, ups, unst)):
        if not un.any():
            continue
        area = torch.where(un, -l_ * u_ / (u_ - l_).clamp(min=1e-12), torch.zeros_like(l_))
        area = area * tn.W[k + 1].abs().sum(0)
        j = int(area.argmax())
        if float(area[j]) > best:
            best, best_k, best_j = float(area[j]), k, j
    return best_k, best_j


def _pop_phases(domains, batch):
    top = domains.pop()
    if top[0].shape[0] > batch:
        domains.append([p[batch:] for p in top])
        top = [p[:batch] for p in top]
    return top
