"""Sound linear relaxations of Sigmoid and Tanh on an interval ``[l, u]`` (batched, float64).

Both lines get the chord's slope ``s = (f(u) - f(l)) / (u - l)``. For *any* slope the lines
``s z + min g`` and ``s z + max g`` with ``g(z) = f(z) - s z`` enclose ``f`` on the interval, and
the extrema of ``g`` lie at the endpoints or where ``f'(z) = s``: since ``f'`` is even and
decreasing in ``|z|`` those are ``+-z*`` with a closed form (sigmoid: ``f' = f (1 - f)``, tanh:
``f' = 1 - f^2``). On a convex (``u <= 0``) or concave (``l >= 0``) piece one line is the chord and
the other the parallel tangent, CROWN's choice there; across 0 the lines stay sound and are
the tightest pair of that slope. Intercepts are widened like every other bound in ``bounds``.
"""
from __future__ import annotations

import torch

S_SHAPED = ("sigmoid", "tanh")
_MAX_SLOPE = {"sigmoid": 0.25, "tanh": 1.0}


def activate(name: str, z: torch.Tensor) -> torch.Tensor:
    """``relu``, ``sigmoid`` or ``tanh`` applied elementwise."""
    if name == "relu":
        return torch.relu(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    raise ValueError(f"unknown activation {name!r}")


def _derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    f = activate(name, z)
    return f * (1 - f) if name == "sigmoid" else 1 - f * f


def _stationary(name: str, s: torch.Tensor) -> torch.Tensor:
    """The ``z* >= 0`` with ``f'(z*) = s`` (``s`` in ``(0, max f']``)."""
    s = s.clamp(min=1e-300, max=_MAX_SLOPE[name])
    if name == "sigmoid":
        f = (1 + torch.sqrt((1 - 4 * s).clamp(min=0))) / 2
        return torch.log(f) - torch.log1p(-f).clamp(min=-745.0)
    t = torch.sqrt((1 - s).clamp(min=0)).clamp(max=1 - 1e-16)
    return torch.atanh(t)


def relax_s_shaped(name: str, lo: torch.Tensor, up: torch.Tensor, slack: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upper ``su z + tu`` and lower ``al z + tl`` lines of ``name`` on ``[lo, up]`` (elementwise)."""
    if name not in S_SHAPED:
        raise ValueError(f"no s-shaped relaxation for {name!r}")
    f_lo, f_up = activate(name, lo), activate(name, up)
    width = up - lo
    wide = width > 1e-9
    chord = (f_up - f_lo) / torch.where(wide, width, torch.ones_like(width))
    s = torch.where(wide, chord, _derivative(name, (lo + up) / 2)).clamp(min=0)
    z_star = _stationary(name, s)
    cands = [lo, up, torch.minimum(torch.maximum(z_star, lo), up), torch.minimum(torch.maximum(-z_star, lo), up)]
    g = torch.stack([activate(name, z) - s * z for z in cands])
    tl, tu = g.min(0).values, g.max(0).values
    tl = tl - slack * (1 + tl.abs())
    tu = tu + slack * (1 + tu.abs())
    return s, tu, s.clone(), tl
