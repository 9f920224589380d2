"""Cheap falsification before any proof: uniform random sampling, then PGD on the spec margin."""
from __future__ import annotations

import numpy as np
import torch

from .bounds import TorchNet
from .spec import Term


def group_margin(y: torch.Tensor, C: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """max over rows of ``C y - d``: a point violates the group iff this is <= 0."""
    return (y @ C.T - d).max(dim=-1).values


def falsify_term(tn: TorchNet, term: Term, n_samples: int = 20000, pgd_steps: int = 40, restarts: int = 8,
                 seed: int = 0, ball: tuple | None = None, max_pgd_groups: int = 4) -> np.ndarray | None:
    """Search for ``x`` in the term's box violating one of its groups; returns it or None.

    ``ball=("L2", center, eps)`` restricts the search to an L2 ball inside the box.
    """
    gen = torch.Generator().manual_seed(seed)
    lo = torch.from_numpy(term.lo)
    hi = torch.from_numpy(term.hi)
    project = _projector(lo, hi, ball)
    with torch.no_grad():
        # one shared sample for all groups: the forward pass is the cost, not the margins
        x = project(lo + torch.rand((n_samples, lo.numel()), generator=gen, dtype=torch.float64) * (hi - lo))
        y = tn.forward(x)
    groups = [(torch.from_numpy(C), torch.from_numpy(d)) for C, d in term.groups]
    margins = []
    for C, d in groups:
        m = group_margin(y, C, d)
        hit = torch.nonzero(m <= 0)
        if hit.numel():
            return x[hit[0, 0]].numpy().copy()
        margins.append(m)
    if pgd_steps <= 0:
        return None
    # PGD on the groups that came closest first
    order = sorted(range(len(groups)), key=lambda g: float(margins[g].min()))
    for g in order[:max_pgd_groups]:
        C, d = groups[g]
        start = x[torch.argsort(margins[g])[:restarts]].clone()
        step = (hi - lo) / 8
        for _ in range(pgd_steps):
            start.requires_grad_(True)
            mm = group_margin(tn.forward(start), C, d)
            (grad,) = torch.autograd.grad(mm.sum(), start)
            with torch.no_grad():
                if (mm <= 0).any():
                    return start[torch.nonzero(mm <= 0)[0, 0]].detach().numpy().copy()
                start = project(start - step * grad.sign())
                step = step * 0.9
        with torch.no_grad():
            mm = group_margin(tn.forward(start), C, d)
            if (mm <= 0).any():
                return start[torch.nonzero(mm <= 0)[0, 0]].numpy().copy()
    return None


def _projector(lo: torch.Tensor, hi: torch.Tensor, ball: tuple | None):
    if ball is None:
        return lambda x: torch.minimum(torch.maximum(x, lo), hi)
    _, center, eps = ball
    c = torch.from_numpy(np.asarray(center, dtype=np.float64))

    def proj(x: torch.Tensor) -> torch.Tensor:
        delta = x - c
        n = delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        x = c + delta * torch.clamp(eps / n, max=1.0)
        return torch.minimum(torch.maximum(x, lo), hi)

    return proj
