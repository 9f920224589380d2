"""The forward sweep: every node's interval in topological order, CROWN at every ReLU input.

For each node feeding a ReLU, the neurons IBP leaves unstable are bounded by CROWN from
that node back to the input (in chunks of rows, so memory stays bounded) and the result is
intersected with the interval; the ReLU's relaxation is then built from the tightened
bounds and every later node's interval starts from them.
"""
from __future__ import annotations

from typing import Callable

import torch

from .crown import BoundState, all_index, relax_relu, tighten_node, unstable_index
from .ir import Graph

INTERMEDIATE = ("crown", "ibp")
TIGHTEN = ("unstable", "all")


def needs_crown(graph: Graph) -> set[int]:
    """ReLU inputs whose interval IBP may overestimate: a ReLU or a second linear op lies upstream."""
    depth = [0] * len(graph.nodes)  # linear/conv ops since the input, ReLUs counting as many
    for i, n in enumerate(graph.nodes[1:], 1):
        d = max(depth[j] for j in n.inputs)
        depth[i] = d + (n.op in ("linear", "conv2d")) + 2 * (n.op == "relu") + (n.op == "add")
    return {k for k in graph.relu_inputs() if depth[k] > 1}


def screen_stops(graph: Graph) -> dict[int, int]:
    """Per ReLU input k, where its cheap screening pass stops: the second-nearest ReLU upstream.

    Substituting back through one ReLU only and concretising at its input equals IBP; through
    a ReLU, the linear op before it, and concretising at the ReLU before that, it is tighter.
    Absent when k has fewer than two ReLUs upstream (then the full pass is as cheap).
    """
    out = {}
    for k in graph.relu_inputs():
        anc = graph.ancestors(k)
        ups = sorted(i for i in anc if graph.nodes[i].op == "relu")
        if len(ups) >= 2:
            out[k] = ups[-2]
    return out


def sweep(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, intermediate: str = "crown", chunk: int = 1024,
          ref: BoundState | None = None, index: dict[int, torch.Tensor] | None = None,
          alphas_of: Callable[[int, slice], dict] | None = None, tighten: str = "unstable") -> BoundState:
    """Intervals and ReLU relaxations of every node for the boxes ``[lo, hi]`` (B, *input_shape).

    ``ref``: a state whose (sound) intervals are intersected with the new ones; ``index``: per
    ReLU input node the neurons to tighten by CROWN (default: those unstable after IBP; the
    chosen ones are written back into ``index`` when it is a dict); ``alphas_of(k, rows)``:
    optional lower slopes for back-substitution from node k (alpha-CROWN); ``tighten``:
    "unstable" (CROWN only for neurons IBP leaves unstable: the relaxations need no more) or
    "all" (every neuron, so that later intervals start from tighter stable neurons too).
    """
    if tighten not in TIGHTEN:
        raise ValueError(f"tighten must be one of {TIGHTEN}, got {tighten!r}")
    if intermediate not in INTERMEDIATE:
        raise ValueError(f"intermediate must be one of {INTERMEDIATE}, got {intermediate!r}")
    st = BoundState(graph)
    st.set(0, lo, hi)
    screen = screen_stops(graph)
    todo = needs_crown(graph) if intermediate == "crown" else set()
    for i, node in enumerate(graph.nodes[1:], 1):
        st.ibp(i)
        if ref is not None:
            st.set(i, torch.maximum(st.lower[i], ref.lower[i]), torch.minimum(st.upper[i], ref.upper[i]))
        if i in todo:
            if index is not None and i in index:
                idx = index[i]
            else:
                if tighten == "unstable" and screen.get(i):
                    # a cheap pass first (substituted back through one ReLU layer only): every
                    # neuron it proves stable is spared the full back-substitution to the input
                    idx = unstable_index(st.lower[i], st.upper[i])
                    if idx.shape[1]:
                        st.set(i, *tighten_node(st, i, idx, chunk, stop=screen[i]))
                idx = unstable_index(st.lower[i], st.upper[i]) if tighten == "unstable" else \
                    all_index(st.lower[i])
                if index is not None:
                    index[i] = idx
            if idx.shape[1]:
                per_rows = None if alphas_of is None else (lambda rows, k=i: alphas_of(k, rows))
                st.set(i, *tighten_node(st, i, idx, chunk, per_rows))
        if node.op == "relu":
            j = node.inputs[0]
            st.relax[i] = relax_relu(st.lower[j], st.upper[j])
    return st
