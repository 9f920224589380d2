"""The verification pipeline: falsify, bound, then split with Z3 at the leaves; one Verdict out."""
from __future__ import annotations

import time

import numpy as np
import torch

from .bounds import TorchNet, compute_bounds
from .branch_and_bound import input_split
from .relu_split import relu_split
from .falsify import falsify_term
from .network import Network
from .spec import Property
from .verdict import HOLDS, UNKNOWN, VIOLATED, Verdict

# Inputs with at most this many non-degenerate dimensions are split in input space
# (ACAS Xu: 5); wider inputs use ReLU splitting.
INPUT_SPLIT_MAX_DIM = 12


def verify(net: Network, prop: Property, timeout: float = 60.0, falsify: bool = True, seed: int = 0,
           margin: float = 1e-7, method: str = "auto") -> Verdict:
    """Decide ``prop`` on ``net``: ``holds`` only with a proof, ``violated`` with a re-checked input.

    ``method``: "auto" (input splitting for low-dimensional boxes, else ReLU splitting),
    "input_split", "relu_split" or "bounds" (bounds only, no splitting: fast, may be unknown).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    prop.check_network(net.input_dim, net.output_dim)
    tn = TorchNet(net)

    def is_cex(x: np.ndarray) -> bool:
        return prop.is_counterexample(x, net.forward(x))

    def done(status: str, x=None, reason: str = "", engine: str = "", stats=None) -> Verdict:
        out = None if x is None else net.forward(x)
        return Verdict(status, x, out, reason, time.monotonic() - t0, engine, stats or {})

    # one bound computation on the whole box settles many properties at once (milliseconds);
    # then cheap falsification (random + PGD) before any splitting or SMT
    open_terms = []
    for term in prop.terms:
        C = torch.from_numpy(np.concatenate([c for c, _ in term.groups]))
        d = torch.from_numpy(np.concatenate([dd for _, dd in term.groups]))
        bd = compute_bounds(tn, torch.from_numpy(term.lo)[None], torch.from_numpy(term.hi)[None], C, d, "crown",
                            ball=prop.ball)
        low = bd.spec_lower[0]
        i = 0
        proved = True
        for c, _ in term.groups:
            proved &= bool((low[i:i + c.shape[0]] > margin).any())
            i += c.shape[0]
        if not proved:
            open_terms.append(term)
    if not open_terms:
        return done(HOLDS, engine="bounds")
    if falsify:
        for t_i, term in enumerate(open_terms):
            x = falsify_term(tn, term, seed=seed + t_i, ball=prop.ball)
            if x is not None and is_cex(x):
                return done(VIOLATED, x, engine="falsify")
    if method == "bounds":
        return done(UNKNOWN, reason="bounds alone do not decide the property", engine="bounds")
    if not net.piecewise_linear:
        # the splitting searches end in an exact ReLU encoding (Z3), which a Sigmoid/Tanh layer does not have
        return done(UNKNOWN, reason=f"bounds do not decide the property and {sorted(set(net.nonlinearities))} "
                                    "networks get no exact search", engine="bounds")
    stats: dict = {}
    engine = ""
    for term in open_terms:
        n_free = int(np.sum(term.hi > term.lo))
        use_input = method == "input_split" or (method == "auto" and n_free <= INPUT_SPLIT_MAX_DIM)
        if method not in ("auto", "input_split", "relu_split"):
            raise ValueError(f"unknown method {method!r}")
        engine = "input_split" if use_input else "relu_split"
        if use_input:
            res = input_split(tn, term, deadline, check_cex=is_cex, ball=prop.ball)
        else:
            res = relu_split(tn, term, deadline, check_cex=is_cex, ball=prop.ball)
        for k, v in res.stats.items():
            stats[k] = stats.get(k, 0) + v
        if res.status == VIOLATED:
            return done(VIOLATED, res.x, engine=engine, stats=stats)
        if res.status == UNKNOWN:
            reason = res.reason
            if time.monotonic() >= deadline and "timeout" not in reason:
                reason = f"timeout: {reason}"
            return done(UNKNOWN, reason=reason, engine=engine, stats=stats)
    return done(HOLDS, engine=engine, stats=stats)
