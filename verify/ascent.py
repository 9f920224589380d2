"""One projected ascent step on a bound: the step every optimised relaxation (alpha, beta) takes."""
from __future__ import annotations

from typing import Sequence

import torch


def ascent_step(opt: torch.optim.Optimizer, bound: torch.Tensor, unit: Sequence[torch.Tensor],
                nonneg: Sequence[torch.Tensor] = ()) -> None:
    """An optimiser step up ``bound.sum()``, then ``unit`` projected onto [0, 1] and ``nonneg`` onto [0, inf)."""
    # Any projected value keeps the bound sound (weak duality), so the projection only restores feasibility.
    opt.zero_grad()
    (-bound.sum()).backward()
    opt.step()
    with torch.no_grad():
        for p in unit:
            p.clamp_(0.0, 1.0)
        for p in nonneg:
            p.clamp_(min=0.0)
