"""Decide a :class:`~verify.spec.Property` on a torch module through the graph bounds: falsify, CROWN, alpha-CROWN.

For networks the dense IR cannot hold (convolutional, residual). ``holds`` only when a bound
proves every group of every term (some row of the group has a lower bound above
``margin``); ``violated`` only with a counterexample re-checked by a float64 forward pass;
otherwise ``unknown`` (with "timeout" in the reason when the time ran out). No splitting yet.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from ..spec import Property, Term
from ..verdict import HOLDS, UNKNOWN, VIOLATED, Verdict
from .bounded import BoundedGraph, InputBox
from .falsify import falsify


def _proved(lower: torch.Tensor, term: Term, margin: float) -> bool:
    """Every group has a row whose lower bound of ``C y - d`` exceeds ``margin``."""
    i = 0
    for c, _ in term.groups:
        if not bool((lower[i:i + c.shape[0]] > margin).any()):
            return False
        i += c.shape[0]
    return True


def verify_graph(module: nn.Module, prop: Property, input_shape: tuple[int, ...], timeout: float = 60.0,
                 device: torch.device | str | None = None, margin: float = 1e-7, alpha_iters: int = 20,
                 seed: int = 0, chunk: int | None = None) -> Verdict:
    """The :class:`Verdict` of ``prop`` on ``module`` (input ``(N, *input_shape)``): falsify first, then bounds."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    bg = BoundedGraph(module, input_shape, torch.float32, device)
    n_in = int(np.prod(input_shape))
    ref = copy.deepcopy(module).eval().to("cpu", torch.float64)
    with torch.no_grad():
        n_out = ref(torch.zeros((1,) + tuple(input_shape), dtype=torch.float64)).numel()
    prop.check_network(n_in, n_out)

    def f64(x: np.ndarray) -> np.ndarray:
        """The module's output in float64 on the CPU (the reference every counterexample is checked on)."""
        with torch.no_grad():
            return ref(torch.as_tensor(x, dtype=torch.float64).reshape((1,) + tuple(input_shape))).reshape(-1).numpy()

    def done(status: str, x=None, reason: str = "", engine: str = "") -> Verdict:
        """The verdict, with the time so far and the output at the counterexample."""
        return Verdict(status, x, None if x is None else f64(x), reason, time.monotonic() - t0, engine)

    model = copy.deepcopy(module).eval().to(bg.device, torch.float32)
    for i, term in enumerate(prop.terms):
        x = falsify(model, term, input_shape, lambda v: prop.is_counterexample(v, f64(v)), bg.device, seed=seed + i)
        if x is not None:
            return done(VIOLATED, x, engine="falsify")
        if time.monotonic() > deadline:
            return done(UNKNOWN, reason="timeout while falsifying", engine="falsify")
    engine = "crown"
    for term in prop.terms:
        C = torch.as_tensor(np.concatenate([c for c, _ in term.groups]), dtype=torch.float64)
        d = torch.as_tensor(np.concatenate([dd for _, dd in term.groups]), dtype=torch.float64)
        lo = torch.as_tensor(term.lo, dtype=torch.float64).reshape((1,) + tuple(input_shape))
        hi = torch.as_tensor(term.hi, dtype=torch.float64).reshape((1,) + tuple(input_shape))
        box = InputBox(lo, hi)  # float64: compute_bounds rounds it outward to float32
        for method in ("crown", "alpha-crown"):
            if time.monotonic() > deadline:
                return done(UNKNOWN, reason="timeout: bounds did not prove the property in time", engine=engine)
            engine = method
            # alpha-CROWN may stop once every row is proved (enough for any group; a margin over d's rounding)
            goal = (d + margin + 1e-6 * (1 + d.abs())).float()
            b = bg.compute_bounds(box, C, method, bound_upper=False, iters=alpha_iters, chunk=chunk, stop_above=goal)
            # C y - d in float64 from the float32 bound of C y: d is subtracted rounding down
            low = b.lower[0].double() - d
            low = low - 4 * torch.finfo(torch.float64).eps * (low.abs() + d.abs())
            if _proved(low, term, margin):
                break
        else:
            return done(UNKNOWN, reason="alpha-CROWN bounds do not decide the property", engine=engine)
    return done(HOLDS, engine=engine)
