"""Branch and bound: input splitting (low-dimensional inputs) and the helpers both searches share.

ReLU splitting is :mod:`verify.relu_split`.

Both searches process a *batch* of sub-problems per step with one vectorised bound
computation (:func:`verify.bounds.compute_bounds`). A sub-problem is closed when for every
output group some row has a lower bound above ``margin``. Open sub-problems first try the
minimiser of their linear lower bound and their centre as counterexamples, then either go
to Z3 (few unstable ReLUs left, or too deep) or are split: input boxes along the dimension
whose trial split gains most on the worse half (or ReluVal's smear ``|A_j| * width_j``),
ReLU domains on the neuron with the best BaBSR-style score. Given unbounded time both are
complete: the Z3 leaves are exact, and an undecided leaf is retried, never the end.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from dataclasses import dataclass, field

import numpy as np
import torch

from . import smt
from .alpha_crown import optimized_bounds
from .bounds import TorchNet, compute_bounds
from .domain_clip import clip_domains
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
                ball: tuple | None = None, bounds: str = "crown", split_rule: str = "portfolio", alpha_iters: int = 10,
                trial_method: str = "crown", trial_depth: int | None = 3, trial_top: int | None = 2,
                smear_share: float = 0.25, clip: bool = True) -> SearchResult:
    """Prove or refute one term by splitting its input box (complete with the Z3 leaves).

    ``bounds``: "crown", or "alpha" (boxes CROWN leaves open get alpha-CROWN bounds).
    ``split_rule``: "portfolio" (the smear for ``smear_share`` of the budget, then, if
    undecided, a fresh search with trials), "trial" (bound every box's two halves along each dimension, in one batch,
    and split where the worse half's bound gains most; the relatively widest dimension when
    no split gains) or "smear" (``|A_j| * width_j`` weighted by ``width_mix``, no trials).
    ``trial_method``, ``trial_depth``: the bound method and back-substitution depth of the
    trial halves; ``trial_top``: try only the smear's best dimensions (None: all).
    ``clip``: shrink every open box to where its linear bounds allow a violation
    (:mod:`verify.domain_clip`) before it is attacked or split.

    A Z3 leaf that stays undecided never ends the search: the box is split again and its
    halves get twice the Z3 time (``tries`` counts the attempts), so only a spent budget
    stops it (reported as a timeout).
    """
    if bounds not in ("crown", "alpha") or split_rule not in ("portfolio", "trial", "smear"):
        raise ValueError(f"bounds must be 'crown'/'alpha' and split_rule 'portfolio'/'trial'/'smear', "
                         f"got {bounds!r}, {split_rule!r}")
    opt = SimpleNamespace(method=method, batch=batch, margin=margin, width_mix=width_mix, leaf_unstable=leaf_unstable,
                          max_depth=max_depth, z3_timeout=z3_timeout, check_cex=check_cex,
                          backsub_depth=backsub_depth, attack_steps=attack_steps, ball=ball, bounds=bounds,
                          alpha_iters=alpha_iters, trial_method=trial_method, trial_depth=trial_depth,
                          trial_top=trial_top, clip=clip)
    st = _SearchState(term)
    if split_rule == "portfolio":
        # the smear is 2-3x cheaper per box and wins on many instances; the trial rule needs
        # far fewer boxes on the hard ones: smear for a share of the budget, then trials
        now = time.monotonic()
        stages = [("smear", now + smear_share * max(0.0, deadline - now)), ("trial", deadline)]
    else:
        stages = [(split_rule, deadline)]
    for i, (rule, stage_deadline) in enumerate(stages):
        if i:
            # a later stage starts again from the whole box: continuing from the smear's deep
            # boxes loses counterexamples the trial rule finds early on big boxes (1_9 prop_7:
            # violated at 32 s restarted, unknown at 116 s continued); the counters carry on
            st.restart()
        res = _search(tn, term, st, stage_deadline, rule, opt)
        if res is not None:
            return res
        if not st.stack:
            break
    stats = st.stats()
    if st.stack:
        return SearchResult("unknown", reason=f"timeout with {len(st.stack)} open boxes after {st.n_boxes}",
                            stats=stats)
    if st.boundary:
        return SearchResult("unknown", reason="boundary: a point within the float margin of the boundary exists",
                            stats=stats)
    return SearchResult("holds", stats=stats)


class _SearchState:
    """The open boxes and counters of one term's search (the counters run on across the portfolio's stages)."""

    def __init__(self, term: Term):
        self.term = term
        self.restart()
        self.n_boxes = self.n_z3 = self.n_retry = self.n_clipped = self.deepest = 0
        self.boundary = False  # a point within the float margin was seen: never "holds" then

    def restart(self) -> None:
        """Open the term's whole box again as the only box (the counters are kept)."""
        lo, hi = self.term.lo, self.term.hi
        self.stack = _BoxStack(torch.from_numpy(lo).reshape(1, -1), torch.from_numpy(hi).reshape(1, -1))

    def stats(self) -> dict:
        """The counters as a stats dict."""
        return {"boxes": self.n_boxes, "z3_leaves": self.n_z3, "z3_retries": self.n_retry,
                "max_depth": self.deepest, "clipped_closed": self.n_clipped}


def _search(tn: TorchNet, term: Term, st: _SearchState, deadline: float, split_rule: str, o: SimpleNamespace
            ) -> SearchResult | None:
    """Process ``st``'s boxes with one split rule until none is left or the deadline passes.

    Returns a ``violated`` result, or None (the caller reads what is left in ``st``).
    """
    C, d, slices = _stack_groups(term)
    w0 = torch.from_numpy(term.hi - term.lo).clamp(min=1e-30)
    stack = st.stack
    while stack:
        if time.monotonic() > deadline:
            return None
        lo, hi, depth, tries = stack.pop(o.batch)
        st.n_boxes += lo.shape[0]
        st.deepest = max(st.deepest, int(depth.max()))
        bd = compute_bounds(tn, lo, hi, C, d, o.method, backsub_depth=o.backsub_depth, ball=o.ball)
        refuted = _group_status(bd.spec_lower, slices, o.margin)
        extra = _refute_conjunctions(bd, refuted, slices, lo, hi, o.margin)
        open_ = ~(refuted.all(1) | bd.infeasible)
        if o.bounds == "alpha" and open_.any():
            oi = torch.nonzero(open_).squeeze(1)
            ob = optimized_bounds(tn, lo[oi], hi[oi], C, d, slices, ball=o.ball, iters=o.alpha_iters,
                                  margin=o.margin)
            refuted[oi] |= ob.lower > o.margin
            open_ = ~(refuted.all(1) | bd.infeasible)
        if o.clip and open_.any():
            # only the part of a box where every row of a group may be <= margin can hold a
            # violation; the rest is proved by the same linear bounds
            oi = torch.nonzero(open_).squeeze(1)
            clo, chi, ref_o = clip_domains(bd.spec_A[oi], bd.spec_c[oi], lo[oi], hi[oi], refuted[oi], slices,
                                           o.margin)
            lo, hi, refuted = lo.clone(), hi.clone(), refuted.clone()
            lo[oi], hi[oi], refuted[oi] = clo, chi, ref_o
            now_closed = ref_o.all(1)
            st.n_clipped += int(now_closed.sum())
            open_[oi] = ~now_closed
        if not open_.any():
            continue
        idx = torch.nonzero(open_).squeeze(1)
        lo, hi, depth, tries = lo[idx], hi[idx], depth[idx], tries[idx]
        A, low = bd.spec_A[idx], bd.spec_lower[idx]
        cands = _candidates(lo, hi, A, low, slices, refuted[idx])
        if extra is not None:
            # the combination's corners were found on the unclipped box: keep them inside
            cands = torch.cat([cands, torch.minimum(torch.maximum(extra[idx], lo.unsqueeze(1)), hi.unsqueeze(1))], 1)
        if o.attack_steps:
            # attack from the most promising candidate only (the last: combination corner or
            # the last group's corner); cheap next to the bound computation
            cands = torch.cat([cands, _local_attack(tn, lo, hi, cands[:, -1:], C, d, slices, o.attack_steps)], 1)
        x = _find_violation(tn, cands, C, d, slices)
        if x is not None and (o.check_cex is None or o.check_cex(x)):
            return SearchResult("violated", x, stats=st.stats())
        unstable = sum(((l_[idx] < 0) & (u_[idx] > 0)).sum(1) for l_, u_ in zip(bd.lower, bd.upper))
        leaf = (unstable <= o.leaf_unstable) | (depth >= o.max_depth)
        for i in torch.nonzero(leaf).squeeze(1).tolist():
            if time.monotonic() > deadline:
                leaf[i:] = False  # no time left: split, so the box stays open for a later stage or the timeout
                break
            st.n_z3 += 1
            res = _z3_leaf(tn, term, lo[i].numpy(), hi[i].numpy(), [l_[idx[i]].numpy() for l_ in bd.lower],
                           [u_[idx[i]].numpy() for u_ in bd.upper], refuted[idx[i]], o.margin,
                           min(o.z3_timeout * 2.0 ** int(tries[i]), max(0.1, deadline - time.monotonic())),
                           o.check_cex, ball=o.ball)
            if res.status == "violated":
                res.stats = st.stats()
                return res
            if res.status == "unknown":
                st.boundary |= res.reason.startswith("boundary")
                # undecided in its time (or only a point within the float margin): split it
                # again (a smaller box is easier for Z3), past max_depth with more Z3 time for
                # the halves; the search goes on with the other boxes
                leaf[i] = False
                if depth[i] >= o.max_depth:
                    tries[i] += 1
                    st.n_retry += 1
        keep = torch.nonzero(~leaf).squeeze(1)
        if keep.numel() == 0:
            continue
        lo, hi, depth, tries, A, low = lo[keep], hi[keep], depth[keep], tries[keep], A[keep], low[keep]
        c_lin = bd.spec_c[idx][keep]
        ref = refuted[idx][keep]
        prior = _smear_score(lo, hi, A, low, slices, ref, w0, o.width_mix)
        closed = None
        if split_rule == "trial":
            parent = SimpleNamespace(spec_lower=low, spec_A=A, spec_c=c_lin)
            dim, closed = _trial_dim(tn, lo, hi, C, d, slices, ref, parent, w0, o.trial_method, o.trial_depth,
                                     o.ball, prior, o.trial_top, o.margin)
        else:
            dim = _guard_dim(prior, hi - lo, w0)
        stack.push_split(lo, hi, depth, tries, dim, closed)
    return None


def _smear_score(lo, hi, A, low, slices, ref, w0, width_mix: float) -> torch.Tensor:
    """ReluVal's smear: the dimension with the largest ``|A_j| * width_j`` of the open groups' best rows."""
    width = hi - lo
    score = torch.zeros_like(lo)
    for g, s in enumerate(slices):
        r = low[:, s].argmax(1) + s.start
        a = A[torch.arange(A.shape[0]), r].abs()
        score += torch.where(ref[:, g:g + 1], torch.zeros_like(a), a) * width
    # the bound's sensitivity alone can starve a wide dimension whose effect hides in the
    # ReLU relaxations; weighting by the relative width keeps every dimension shrinking
    return (score + 1e-30) * (width / w0) ** width_mix


def _box_value(bd, slices, ref: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(B,) the worst open group's bound (+inf when every group is refuted).

    A group's bound is its best row's, or for a conjunction the better of that and the
    combination of its rows (:func:`_combine_rows`).
    """
    vals = []
    for s in slices:
        v = bd.spec_lower[:, s].max(1).values
        if s.stop - s.start > 1 and bd.spec_A is not None:
            v = torch.maximum(v, _combine_rows(bd.spec_A[:, s], bd.spec_c[:, s], lo, hi, iters=10)[0])
        vals.append(v)
    v = torch.stack(vals, 1)
    return torch.where(ref, torch.full_like(v, torch.inf), v).min(1).values


def _trial_dim(tn, lo, hi, C, d, slices, ref, parent_bd, w0, method, backsub_depth, ball, prior: torch.Tensor,
               top: int | None, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The dimension whose split gains most on the worse half (one batched bound call for all trials).

    ``prior`` (K, n0): a cheap score (the smear); with ``top`` only its ``top`` best dimensions
    are tried. Gains of ~0 fall back to the prior's choice (guarded like every choice: never
    a zero-width or over-thin dimension), so every split makes progress. Also returns (K, 2)
    bool: which half of the chosen split its trial bound already proves (above ``margin``).
    """
    K, n0 = lo.shape
    k = n0 if top is None else min(top, n0)
    # candidates: the prior's best among the dimensions the guard allows
    allowed = _guard_mask(hi - lo, w0)
    cand = torch.where(allowed, prior, torch.full_like(prior, -1.0)).topk(k, dim=1).indices   # (K, k)
    rows = torch.arange(K).unsqueeze(1).expand(K, k)
    slot = torch.arange(k).unsqueeze(0).expand(K, k)
    mid = ((lo + hi) / 2).gather(1, cand)                        # (K, k)
    lo_t = lo.unsqueeze(1).expand(K, k, n0).clone()              # [box, trial, input]
    hi_t = hi.unsqueeze(1).expand(K, k, n0).clone()
    hi_l, lo_r = hi_t.clone(), lo_t.clone()
    hi_l[rows, slot, cand] = mid
    lo_r[rows, slot, cand] = mid
    los = torch.cat([lo_t, lo_r]).reshape(-1, n0)
    his = torch.cat([hi_l, hi_t]).reshape(-1, n0)
    bd = compute_bounds(tn, los, his, C, d, method, backsub_depth=backsub_depth, ball=ball)
    ref2 = ref.repeat(2, 1).repeat_interleave(k, 0)
    v = _box_value(bd, slices, ref2, los, his)
    v = torch.where(bd.infeasible, torch.full_like(v, torch.inf), v).reshape(2, K, k)
    parent = _box_value(parent_bd, slices, ref, lo, hi).unsqueeze(1)
    gain = torch.minimum(v[0], v[1]) - parent                    # (K, k)
    gain = torch.where(gain > 1e-9 * (1 + parent.abs()), gain, torch.zeros_like(gain))
    gain = torch.where(allowed.gather(1, cand), gain.clamp(max=1e30), torch.zeros_like(gain))
    pick = gain.argmax(1, keepdim=True)
    best = cand.gather(1, pick).squeeze(1)
    gained = gain.amax(1) > 0
    # the trial bounds are sound (a shallower back-substitution is only looser): a half they
    # prove needs no second bound computation; without a gain the fallback dimension was not tried
    closed = torch.stack([v[0].gather(1, pick).squeeze(1), v[1].gather(1, pick).squeeze(1)], 1) > margin
    return torch.where(gained, best, _guard_dim(prior, hi - lo, w0)), closed & gained.unsqueeze(1)


def _guard_mask(width: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """Dimensions that may be split: non-zero width, not ``ASPECT_CAP`` times thinner than the widest."""
    rel = width / w0
    return (width > 0) & (rel > 1e-12) & (rel * ASPECT_CAP >= rel.amax(1, keepdim=True))


ASPECT_CAP = 2.0 ** 6  # a split dimension is at most 6 halvings ahead of the relatively widest


def _guard_dim(score: torch.Tensor, width: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """The best-scoring dimension, never a zero-width one; the relatively widest when no score is positive.

    Splitting a dimension of zero width (or one whose midpoint rounds to an end) would
    produce a child equal to its parent and loop forever. A dimension more than
    ``ASPECT_CAP`` times narrower (relative to the root box) than the widest is not chosen
    either: a score that keeps preferring one dimension would otherwise slice the box into
    ever thinner slivers whose bounds never close; with the cap every box's diameter
    shrinks as the depth grows, so the search stays complete.
    """
    rel = width / w0
    score = torch.where(_guard_mask(width, w0), score, torch.full_like(score, -1.0))
    widest = rel.argmax(1)
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

    def push_split(self, lo, hi, depth, tries, dim, closed: torch.Tensor | None = None) -> None:
        """Push both halves of every box along its dimension ``dim``, except those ``closed`` (K, 2) marks proved."""
        rows = torch.arange(lo.shape[0])
        mid = (lo[rows, dim] + hi[rows, dim]) / 2
        lo2, hi1 = lo.clone(), hi.clone()
        hi1[rows, dim] = mid
        lo2[rows, dim] = mid
        for h, (l_, u_) in enumerate(((lo, hi1), (lo2, hi))):
            keep = slice(None) if closed is None else torch.nonzero(~closed[:, h]).squeeze(1)
            if closed is None or keep.numel():
                self.items.append((l_[keep], u_[keep], depth[keep] + 1, tries[keep].clone()))


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
