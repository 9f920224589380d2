"""Falsify first, on any forward callable: random and corner sampling, then PGD with restarts on group margins.

A group ``C y <= d`` of a term is violated at ``x`` iff its margin ``max_rows(C y - d) <= 0``.
Everything runs on the box's device in the given dtype (float32 by default); a point whose
margin is small enough is handed to ``check`` (typically a float64 forward pass and
:meth:`verify.spec.Property.is_counterexample`) and returned only if that confirms it.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..spec import Term

# float32 margins this close to zero are re-checked: the float64 forward pass decides
CHECK_SLACK = 1e-4


def _groups(term: Term, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """All groups padded to the same row count: C (G, r, m), d (G, r); padding rows never reach the max."""
    r = max(c.shape[0] for c, _ in term.groups)
    m = term.groups[0][0].shape[1]
    C = torch.zeros(len(term.groups), r, m, dtype=dtype, device=device)
    d = torch.full((len(term.groups), r), torch.finfo(dtype).max / 4, dtype=dtype, device=device)
    for g, (c, dd) in enumerate(term.groups):
        C[g, : c.shape[0]] = torch.as_tensor(c, dtype=dtype, device=device)
        d[g, : c.shape[0]] = torch.as_tensor(dd, dtype=dtype, device=device)
    return C, d


def margins(y: torch.Tensor, C: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Margins (N, G) of outputs ``y`` (N, m) for every group: <= 0 iff the group is violated."""
    return (torch.einsum("grm,nm->ngr", C, y) - d).max(-1).values


def falsify(forward: Callable[[torch.Tensor], torch.Tensor], term: Term, input_shape: tuple[int, ...],
            check: Callable[[np.ndarray], bool], device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, n_samples: int = 2048, restarts: int = 16, steps: int = 50,
            max_groups: int = 9, seed: int = 0, batch: int = 1024) -> np.ndarray | None:
    """A confirmed counterexample (flat float64 input) in the term's box, or None.

    ``forward`` maps ``(N, *input_shape)`` to outputs ``(N, m)`` on ``device``. Samples
    ``n_samples`` points (half uniform, half box corners, plus the centre), then runs PGD
    (sign steps, cosine-decayed size, projected on the box) from ``restarts`` starts for each
    of the ``max_groups`` groups that came closest; ``check`` confirms every candidate.
    """
    gen = torch.Generator().manual_seed(seed)
    lo = torch.as_tensor(term.lo, dtype=dtype).to(device).reshape((1,) + tuple(input_shape))
    hi = torch.as_tensor(term.hi, dtype=dtype).to(device).reshape((1,) + tuple(input_shape))
    C, d = _groups(term, device, dtype)
    u = torch.rand((n_samples,) + tuple(input_shape), generator=gen).to(device, dtype)
    u[n_samples // 2:] = (u[n_samples // 2:] > 0.5).to(dtype)   # corners: where piecewise-linear nets peak
    u[0] = 0.5
    x = lo + u * (hi - lo)
    with torch.no_grad():
        mg = torch.cat([margins(forward(x[s:s + batch]).reshape(min(batch, n_samples - s), -1), C, d)
                        for s in range(0, n_samples, batch)])
    hit = _confirmed(x, mg, check, term)
    if hit is not None or steps <= 0:
        return hit
    order = torch.argsort(mg.min(0).values)[:max_groups]
    # starts: the best samples for each chosen group, half of them random points
    starts, groups = [], []
    for g in order.tolist():
        best = torch.argsort(mg[:, g])[: (restarts + 1) // 2]
        rnd = torch.randint(0, n_samples, (restarts - best.numel(),), generator=gen).to(device)
        starts.append(x[torch.cat([best, rnd])])
        groups += [g] * restarts
    xs = torch.cat(starts)
    gi = torch.tensor(groups, device=device)
    Cs, ds = C[gi], d[gi]
    size0 = (hi - lo) / 4
    for t in range(steps):
        xs = xs.detach().requires_grad_(True)
        m = (torch.einsum("nrm,nm->nr", Cs, forward(xs).reshape(xs.shape[0], -1)) - ds).max(-1).values
        (grad,) = torch.autograd.grad(m.sum(), xs)
        with torch.no_grad():
            hit = _confirmed(xs, m.unsqueeze(1), check, term)
            if hit is not None:
                return hit
            size = size0 * 0.5 * (1 + math.cos(math.pi * t / steps)) + 1e-3 * size0
            xs = torch.minimum(torch.maximum(xs - size * grad.sign(), lo), hi)
    with torch.no_grad():
        m = (torch.einsum("nrm,nm->nr", Cs, forward(xs).reshape(xs.shape[0], -1)) - ds).max(-1).values
    return _confirmed(xs, m.unsqueeze(1), check, term)


def _confirmed(x: torch.Tensor, mg: torch.Tensor, check: Callable[[np.ndarray], bool], term: Term
               ) -> np.ndarray | None:
    """The first point, closest first, among those with a margin near or below 0 that ``check`` confirms."""
    best = mg.min(1).values
    for i in torch.argsort(best)[: 8].tolist():
        if float(best[i]) > CHECK_SLACK:
            break
        # the float32 box can stick out of the float64 one by a rounding: clip back into it
        cand = np.clip(x[i].detach().to("cpu", torch.float64).reshape(-1).numpy(), term.lo, term.hi)
        if check(cand):
            return cand
    return None
