"""Exact Z3 encoding of a ReLU network on a box, with the bounds from :mod:`verify.bounds`.

Stable ReLUs are fixed (active: ``h = z``, inactive: dropped), unstable ones get the exact
case split ``(z >= 0 and h = z) or (z <= 0 and h = 0)`` plus the triangle relaxation as
redundant lemmas that help the LRA solver prune. Weights enter as exact rationals of their
float64 values, so Z3 reasons about the real-valued network; a small margin on the output
constraint keeps ``holds`` robust to the float rounding of a concrete forward pass.
"""
from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import z3

from .network import Network

SAT, UNSAT, UNKNOWN = "sat", "unsat", "unknown"
# L2 balls over at most this many inputs are encoded exactly (quadratic), wider ones by cuts
QUADRATIC_MAX_DIM = 8


def _q(v: float) -> z3.ArithRef:
    f = Fraction(float(v))
    return z3.Q(f.numerator, f.denominator) if f.denominator != 1 else z3.RealVal(f.numerator)


def _lin(coefs: np.ndarray, vars_: list, const: float):
    terms = [_q(c) * v for c, v in zip(coefs, vars_) if c != 0.0 and v is not None]
    if const != 0.0:
        terms.append(_q(const))
    if not terms:
        return z3.RealVal(0)
    return z3.Sum(terms) if len(terms) > 1 else terms[0]


def encode(net: Network, lo: np.ndarray, hi: np.ndarray, lower: list[np.ndarray] | None = None,
           upper: list[np.ndarray] | None = None, phases: list[np.ndarray] | None = None,
           x_domain: list[list[float]] | None = None):
    """Build a solver with the network on the box; returns ``(solver, x_vars, y_exprs, hidden)``.

    ``hidden[k]`` holds the post-ReLU expressions of hidden layer k (``None`` = constant 0).

    ``lower/upper``: pre-activation bounds per hidden layer (sound, e.g. from CROWN).
    ``phases``: optional +1/-1/0 per hidden neuron (ReLU splits). ``x_domain``: optional finite
    set of allowed values per input (used by DLV's discretised regions).
    """
    if not net.piecewise_linear:
        # the encoding is exact only for ReLU layers; a Sigmoid/Tanh layer must never reach it
        raise ValueError(f"the Z3 encoding needs a ReLU network, this one has {sorted(set(net.nonlinearities))}")
    s = z3.Solver()
    xs = [z3.Real(f"x{i}") for i in range(net.input_dim)]
    for i, x in enumerate(xs):
        if x_domain is not None and x_domain[i] is not None:
            vals = sorted(set(float(v) for v in x_domain[i]))
            s.add(z3.Or([x == _q(v) for v in vals]) if len(vals) > 1 else x == _q(vals[0]))
        else:
            s.add(x >= _q(lo[i]), x <= _q(hi[i]))
    h: list = xs
    hidden: list[list] = []
    for k in range(net.num_layers - 1):
        w, b = net.weights[k], net.biases[k]
        nxt = []
        for j in range(w.shape[0]):
            z = _lin(w[j], h, b[j])
            lj = -np.inf if lower is None else lower[k][j]
            uj = np.inf if upper is None else upper[k][j]
            ph = 0 if phases is None else int(phases[k][j])
            if uj <= 0 or ph < 0:
                if ph < 0:
                    s.add(z <= 0)
                nxt.append(None)  # constant 0: dropped from the next layer's sums
                continue
            if lj >= 0 or ph > 0:
                if ph > 0:
                    s.add(z >= 0)
                v = z3.Real(f"h{k}_{j}")
                s.add(v == z)
                nxt.append(v)
                continue
            v = z3.Real(f"h{k}_{j}")
            zv = z3.Real(f"z{k}_{j}")
            s.add(zv == z, v >= 0, v >= zv)
            s.add(z3.Or(z3.And(zv >= 0, v == zv), z3.And(zv <= 0, v == 0)))
            if np.isfinite(lj) and np.isfinite(uj):
                s.add(zv >= _q(lj), zv <= _q(uj))
                s.add(v * _q(uj - lj) <= _q(uj) * (zv - _q(lj)))  # triangle: h <= u (z - l) / (u - l)
            nxt.append(v)
        h = nxt
        hidden.append(nxt)
    ys = [_lin(net.weights[-1][j], h, net.biases[-1][j]) for j in range(net.output_dim)]
    return s, xs, ys, hidden


def check_group(net: Network, lo: np.ndarray, hi: np.ndarray, C: np.ndarray, d: np.ndarray, margin: float,
                timeout_s: float, lower=None, upper=None, phases=None, x_domain=None, ball: tuple | None = None
                ) -> tuple[str, np.ndarray | None]:
    """Is there ``x`` in the box with ``C f(x) - d <= margin`` (all rows)? Returns (sat/unsat/unknown, x).

    ``ball=("L2", center, eps)``: ``x`` must also lie in that ball. Up to
    ``QUADRATIC_MAX_DIM`` inputs the ball is a quadratic constraint. Wider ones are not
    encoded: Z3 solves the linear problem on the box and every model outside the ball is cut
    off by the ball's tangent half-space at its projection (valid for every point of the
    ball), so UNSAT stays a proof. A SAT answer always comes with a point whose distance to
    the centre is checked in float64 (a model whose rational value rounds outside is cut too).
    """
    s, xs, ys, _ = encode(net, lo, hi, lower, upper, phases, x_domain)
    for row, rhs in zip(C, d):
        s.add(_lin(row, ys, -rhs) <= _q(margin))
    if ball is not None and len(xs) <= QUADRATIC_MAX_DIM:
        # few inputs: the exact quadratic constraint (Z3's nonlinear arithmetic is complete);
        # the float check below still confirms each model lies in the ball
        _, center, eps = ball
        center = np.asarray(center, dtype=np.float64).reshape(-1)
        s.add(z3.Sum([(x - _q(c)) * (x - _q(c)) for x, c in zip(xs, center)]) <= _q(eps) * _q(eps))
    stop = time.monotonic() + timeout_s
    while True:
        s.set("timeout", max(1, int((stop - time.monotonic()) * 1000)))
        r = s.check()
        if r == z3.unsat:
            return UNSAT, None
        if r != z3.sat:
            return UNKNOWN, None
        m = s.model()
        x = np.array([_val(m.eval(v, model_completion=True)) for v in xs])
        if ball is None:
            return SAT, x
        _, center, eps = ball
        center = np.asarray(center, dtype=np.float64).reshape(-1)
        gap = x - center
        dist = float(np.linalg.norm(gap))
        if dist <= eps:
            return SAT, x
        # the projection onto the ball may itself violate the property (cheap to try)
        proj = np.clip(center + gap * (eps / dist) * (1 - 1e-12), lo, hi)
        if np.linalg.norm(proj - center) <= eps and np.all(C @ net.forward(proj) - d <= margin):
            return SAT, proj
        if time.monotonic() >= stop:
            return UNKNOWN, None
        g = gap / dist
        rhs = float(g @ center) + eps * float(np.linalg.norm(g))
        rhs += 1e-9 * (1 + abs(rhs))  # outward, so float rounding never cuts a point of the ball
        s.add(_lin(g, xs, 0.0) <= _q(rhs))


def _val(v) -> float:
    if z3.is_rational_value(v):
        return v.numerator_as_long() / v.denominator_as_long()
    return float(v.as_decimal(20).rstrip("?"))
