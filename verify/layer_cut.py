"""Cut a traced graph into IR layers: one activation per layer, skip connections and MaxPool rewritten exactly.

The importers run the graph on basis *points* ``0, e_1, ..., e_n`` of the current basis (the
network input, or the output of the last activation layer), so every input-dependent tensor
is an affine function of that basis. At an activation the graph is cut: the new layer holds
the rows the activation applies to *and* every other tensor still needed later (a skip
connection, or MaxPool's running maximum). Such a carried tensor ``c`` goes through the ReLU
layer as ``relu(c) - relu(-c) = c``, or as ``relu(c) = c`` alone when ``c`` is provably
non-negative (non-negative weights and bias on a basis of ReLU outputs). MaxPool then is
exact affine + ReLU: ``max(a, b) = a + relu(b - a)``, reduced pairwise over each window.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .network import UnsupportedOperationError


def basis_points(shape: tuple[int, ...]) -> np.ndarray:
    """Points ``0, e_1, ..., e_n`` of an ``n``-element basis, as an array ``(n + 1, *shape)``."""
    n = int(np.prod(shape))
    return np.concatenate([np.zeros((1, n)), np.eye(n)], axis=0).reshape((n + 1,) + tuple(shape))


def affine_of(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` with ``tensor = W @ basis + b`` (flattened) from the tensor's values at the basis points."""
    flat = pts.reshape(pts.shape[0], -1)
    return (flat[1:] - flat[0]).T.copy(), flat[0].copy()


class LayerBuilder:
    """Collects the IR layers while an importer walks the graph; ``n_base`` is the current basis size."""

    def __init__(self, n_in: int):
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.nonlinearities: list[str] = []
        self.n_base = n_in
        self.nonneg = False  # whether the current basis values are all >= 0 (true after a ReLU layer)

    def _provably_nonneg(self, w: np.ndarray, b: np.ndarray) -> bool:
        return self.nonneg and bool((w >= 0).all() and (b >= 0).all())

    def cut(self, act: str, apply: list[np.ndarray], carry: list[np.ndarray]) -> tuple[list, list]:
        """Add one layer: ``act`` of each ``apply`` tensor, each ``carry`` tensor unchanged; their new points."""
        for t in apply + carry:
            if t.shape[0] != self.n_base + 1:
                raise AssertionError("point batch size mismatch")
        if carry and act != "relu":
            raise UnsupportedOperationError(f"a tensor that skips over a {act} layer (skip connection or pooling "
                                            f"beside it) is not supported; only ReLU layers can carry it")
        rows_w, rows_b, plan = [], [], []
        n = 0
        for t in apply:
            w, b = affine_of(t)
            rows_w.append(w)
            rows_b.append(b)
            plan.append(("apply", n, w.shape[0], t.shape[1:]))
            n += w.shape[0]
        for t in carry:
            w, b = affine_of(t)
            if self._provably_nonneg(w, b):
                rows_w.append(w)
                rows_b.append(b)
                plan.append(("pos", n, w.shape[0], t.shape[1:]))
                n += w.shape[0]
            else:
                rows_w += [w, -w]
                rows_b += [b, -b]
                plan.append(("both", n, w.shape[0], t.shape[1:]))
                n += 2 * w.shape[0]
        self.weights.append(np.concatenate(rows_w, 0))
        self.biases.append(np.concatenate(rows_b, 0))
        self.nonlinearities.append(act)
        self.n_base = n
        self.nonneg = act in ("relu", "sigmoid")
        new = basis_points((n,)).reshape(n + 1, n)
        out_apply, out_carry = [], []
        for kind, start, size, shape in plan:
            rep = new[:, start:start + size]
            if kind == "both":
                rep = rep - new[:, start + size:start + 2 * size]
            (out_apply if kind == "apply" else out_carry).append(rep.reshape((n + 1,) + tuple(shape)))
        return out_apply, out_carry


def pool_windows(pts: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], op: str) -> list[np.ndarray]:
    """The ``kh * kw`` shifted views (last two axes spatial) whose elementwise max is the pool (no padding)."""
    kh, kw = kernel
    sh, sw = stride
    h, w = pts.shape[-2:]
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise UnsupportedOperationError(f"{op} kernel {kernel} larger than its {h}x{w} input")
    return [pts[..., i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]


def max_reduce(windows: list[np.ndarray], cut: Callable[[list, list], tuple[list, list]]) -> np.ndarray:
    """Elementwise max of ``windows`` by pairwise ``a + relu(b - a)`` levels, each one ``cut(apply, carry)``."""
    vals = list(windows)
    while len(vals) > 1:
        pairs = [(vals[i], vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
        odd = [vals[-1]] if len(vals) % 2 else []
        diffs, keeps = cut([b - a for a, b in pairs], [a for a, _ in pairs] + odd)
        vals = [k + d for k, d in zip(keeps, diffs)] + keeps[len(pairs):]
    return vals[0]


def cut_carrying(layers: LayerBuilder, act: str, apply: list[np.ndarray], carry: list[np.ndarray], env: dict,
                 live: list, wrap: Callable[[np.ndarray], Any]) -> tuple[list, list]:
    """One activation layer of ``layers``; ``env[k]`` for each ``live`` key (a value a later op reads) moves with it.

    A value several keys share (an alias) is carried once. Returns the new points of ``apply`` and ``carry``.
    """
    keys, seen = [], set()
    for k in live:
        if id(env[k]) not in seen:
            seen.add(id(env[k]))
            keys.append(k)
    new_apply, new_carry = layers.cut(act, apply, carry + [np.asarray(env[k].detach()) for k in keys])
    moved: dict[int, Any] = {}
    for k, pts in zip(keys, new_carry[len(carry):]):
        moved.setdefault(id(env[k]), wrap(pts))
    for k in live:
        env[k] = moved[id(env[k])]
    return new_apply, new_carry[:len(carry)]

