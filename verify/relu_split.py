"""ReLU branch and bound with beta-CROWN bounds, BaBSR-style branching and Z3 at the leaves."""
from __future__ import annotations

import time

import torch

from .alpha_crown import optimized_bounds
from .bounds import TorchNet, compute_bounds, l2_ball
from .branch_and_bound import (SearchResult, _find_violation, _group_status, _refute_conjunctions, _stack_groups,
                               _z3_leaf)
from .spec import Term


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
    per_domain = None  # seconds per domain of the last batch's bounds
    boundary = False

    def stats() -> dict:
        return {"domains": n_dom, "z3_leaves": n_z3, "z3_retries": n_retry}

    def leaf(lows, ups, ph, ref, tries) -> SearchResult:
        return _z3_leaf(tn, term, term.lo, term.hi, [v.numpy() for v in lows], [v.numpy() for v in ups], ref,
                        margin, min(z3_timeout * 2.0 ** tries, max(0.1, deadline - time.monotonic())), check_cex,
                        [p.numpy() for p in ph], ball)

    def timeout(note: str = "") -> SearchResult:
        left = sum(p[0].shape[0] for p in domains) + len(deferred)
        return SearchResult("unknown", reason=f"timeout with {left} open ReLU domains after {n_dom}{note}",
                            stats=stats())

    while domains or deferred:
        if time.monotonic() > deadline:
            return timeout()
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
        # a batch's bounds cannot be interrupted (6 s for 64 domains of a 4 x 256 MNIST net): take only as many
        # domains as the time left allows at the last batch's pace, so an answer never arrives after the deadline
        fit = batch if per_domain is None else int((deadline - time.monotonic()) / per_domain)
        if fit < 1:
            return timeout(" (no time left for another batch)")
        phases = _pop_phases(domains, min(batch, fit))
        B = phases[0].shape[0]
        n_dom += B
        t_batch = time.monotonic()
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
        per_domain = (time.monotonic() - t_batch) / B
        open_ = ~(refuted.all(1) | bd.infeasible)
        if not open_.any():
            continue
        idx = torch.nonzero(open_).squeeze(1)
        x = _find_violation(tn, _corners(lo[idx], hi[idx], A_g[idx], ball), C, d, slices)
        if x is not None and (check_cex is None or check_cex(x)):
            return SearchResult("violated", x, stats=stats())
        children = [[] for _ in sizes]
        for i in idx.tolist():
            if time.monotonic() > deadline:
                break  # the loop's deadline check reports the timeout (open domains are not lost silently)
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
