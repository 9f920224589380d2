"""Input-domain clipping: shrink a box to the part where its linear bounds still allow a violation.

A group (conjunction ``C f(x) - d <= 0``) can only be satisfied at points where every row's
linear lower bound ``A_r x + c_r`` (valid on the box) is at most the margin. Each row thus
cuts the box to an interval per dimension: ``a_j x_j <= t - c - sum_{i != j} min_x a_i x_i``.
The clipped box of a term is the hull, over its open groups, of each group's box cut by all
its rows (a few passes, each on the previous pass's box). Everything outside it is proved,
so proving the clipped box proves the box; a group whose cut box is empty is refuted.

Floating point: the threshold is raised and every cut widened outward by more than the
rounding error of its sums, so a clipped box always contains the real-valued one.
"""
from __future__ import annotations

import torch

from .bounds import SLACK


def _cut(a: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, margin: float
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of every row (B, R, n0) / (B, R) over the boxes (B, n0): the cut (lo, hi)."""
    lo3, hi3 = lo.unsqueeze(1), hi.unsqueeze(1)
    m = torch.minimum(a * lo3, a * hi3)                           # per-dimension minimum of a_j x_j
    mag = c.abs() + (a.abs() * torch.maximum(lo3.abs(), hi3.abs())).sum(-1)   # scale of the row's sums
    rest = (margin + SLACK * (1 + mag) - c - m.sum(-1)).unsqueeze(-1)
    # only dimensions the row really constrains: a tiny |a_j| gives a meaningless (huge) cut
    use = a.abs() * (hi3 - lo3) > 1e-9 * (1 + mag.unsqueeze(-1))
    safe_a = torch.where(use, a, torch.ones_like(a))
    bound = (rest + m) / safe_a
    pad = 1e-9 * (1 + mag.unsqueeze(-1)) / safe_a.abs() + SLACK * (1 + bound.abs())
    inf = torch.full_like(bound, torch.inf)
    new_hi = torch.where(use & (a > 0), bound + pad, inf).amin(1)
    new_lo = torch.where(use & (a < 0), bound - pad, -inf).amax(1)
    return torch.maximum(lo, new_lo), torch.minimum(hi, new_hi)


def clip_domains(A: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, refuted: torch.Tensor,
                 slices: list[slice], margin: float, passes: int = 2
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip boxes (B, n0) by the linear bounds ``A`` (B, m, n0), ``c`` (B, m) of their open groups.

    ``refuted`` (B, G): groups already closed (they keep no part of the box). Returns the
    clipped (lo, hi) and the updated ``refuted``; a box with every group refuted is closed
    (its returned box is then meaningless).
    """
    ref = refuted.clone()
    hull_lo = torch.full_like(lo, torch.inf)
    hull_hi = torch.full_like(hi, -torch.inf)
    for g, s in enumerate(slices):
        glo, ghi = lo, hi
        for _ in range(passes):
            glo, ghi = _cut(A[:, s], c[:, s], glo, ghi, margin)
        empty = (glo > ghi).any(1)
        ref[:, g] |= empty
        keep = (~ref[:, g]).unsqueeze(1)
        hull_lo = torch.where(keep, torch.minimum(hull_lo, glo), hull_lo)
        hull_hi = torch.where(keep, torch.maximum(hull_hi, ghi), hull_hi)
    closed = ref.all(1, keepdim=True)
    return torch.where(closed, lo, hull_lo), torch.where(closed, hi, hull_hi), ref
