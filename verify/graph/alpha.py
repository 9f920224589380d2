"""alpha-CROWN on the graph IR: optimised lower ReLU slopes for the output rows and every intermediate bound.

Free parameters: for the output rows, one slope per (box, row, ReLU neuron); for each
node feeding a ReLU, one slope per (box, tightened neuron and side, upstream ReLU neuron)
(``intermediate_alpha``). Any slope in [0, 1] gives a sound lower line ``relu(z) >= alpha z``,
so every value the loop computes (with projected slopes) is a sound bound; the best one
per row is kept, and the result is never below CROWN's (where the loop starts). Tighter
intermediate bounds found on the way are kept too (the intersection of sound intervals).
"""
from __future__ import annotations

import torch

from rbl_core.training import make_optimizer

from ..ascent import ascent_step
from .crown import BoundState, crown_rows
from .ir import Graph
from .propagate import sweep


def _init(st: BoundState, r: int, lead: tuple[int, ...]) -> torch.Tensor:
    """CROWN's slopes of ReLU r broadcast to ``(B, *lead, *shape)``, as a leaf to optimise."""
    al = st.relax[r].lower_slope
    B = al.shape[0]
    view = (B,) + (1,) * len(lead) + tuple(al.shape[1:])
    return al.reshape(view).expand((B,) + lead + tuple(al.shape[1:])).clone().requires_grad_(True)


def alpha_crown(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, A: torch.Tensor, base: BoundState,
                index: dict[int, torch.Tensor], crown: torch.Tensor, iters: int = 20, lr: float = 0.1,
                chunk: int = 1024, intermediate_alpha: bool = True, stop_above: float | torch.Tensor | None = None
                ) -> tuple[torch.Tensor, BoundState]:
    """Lower bounds (B, S) of the rows ``A`` (B, S, *output_shape), at least ``crown`` (CROWN's bounds).

    ``base``/``index``: the CROWN state and the neurons it tightened per ReLU input node.
    ``stop_above``: stop once every row's bound exceeds it. Returns the bounds and a state
    whose intervals are the tightest found.
    """
    out = len(graph.nodes) - 1
    relus = [i for i, n in enumerate(graph.nodes) if n.op == "relu"]
    spec = {r: _init(base, r, (A.shape[1],)) for r in relus if r in graph.ancestors(out)}
    inter: dict[int, dict[int, torch.Tensor]] = {}
    if intermediate_alpha:
        for k, idx in index.items():
            if idx.shape[1]:
                inter[k] = {r: _init(base, r, (2, idx.shape[1])) for r in relus if r in graph.ancestors(k)}
    params = list(spec.values()) + [a for d in inter.values() for a in d.values()]
    if not params:
        return crown, base

    def alphas_of(k: int, rows: slice) -> dict:
        """The intermediate slopes of node k's tightened rows ``rows``."""
        return {r: a[:, :, rows].flatten(1, 2) for r, a in inter.get(k, {}).items()}

    opt = make_optimizer(params, lr=lr)
    best, ref = crown.clone(), base
    for _ in range(iters):
        st = sweep(graph, lo, hi, "crown", chunk, ref=ref, index=index, alphas_of=alphas_of if inter else None)
        val = crown_rows(st, out, A, spec)
        with torch.no_grad():
            best = torch.maximum(best, val.detach())
            # every interval of this sweep is sound and already intersected with ref's
            ref = BoundState(graph, {i: v.detach() for i, v in st.lower.items()},
                             {i: v.detach() for i, v in st.upper.items()},
                             {i: r for i, r in base.relax.items()})
        if stop_above is not None and bool((best > stop_above).all()):
            break
        ascent_step(opt, val, params)
    ref.relax = sweep(graph, lo, hi, "ibp", chunk, ref=ref).relax  # relaxations of the tightest intervals
    return best, ref


