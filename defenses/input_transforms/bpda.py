"""Straight-through BPDA (Athalye et al. 2018): the exact transform forward, the identity backward."""
from __future__ import annotations

from typing import Callable

import torch


def straight_through(x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``transform(x)`` in the forward pass, with the gradient of the identity in the backward pass."""
    with torch.no_grad():
        out = transform(x.detach())
    return x + (out.to(x.dtype) - x).detach()
