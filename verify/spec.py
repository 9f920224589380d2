"""Verification properties: input boxes and the output region that would be a violation.

A :class:`Property` is violated iff there are a term ``(lo, hi, groups)`` and a group
``(C, d)`` of it such that some ``x`` with ``lo <= x <= hi`` gives ``C @ f(x) <= d`` in every
row. This is the disjunctive normal form VNN-LIB files describe (they state the negation
of the safety property).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Term:
    """One input box with the output groups (each a conjunction ``C y <= d``) to rule out."""

    lo: np.ndarray
    hi: np.ndarray
    groups: list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Property:
    """A disjunction of :class:`Term` s; ``holds`` means no term is satisfiable."""

    terms: list[Term]
    name: str = "property"
    # optional ball constraint a counterexample must also meet: ("L2", center, eps)
    ball: tuple | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.terms:
            t.lo = np.asarray(t.lo, dtype=np.float64).reshape(-1)
            t.hi = np.asarray(t.hi, dtype=np.float64).reshape(-1)
            if t.lo.shape != t.hi.shape:
                raise ValueError(f"box bounds have shapes {t.lo.shape} and {t.hi.shape}")
            if np.any(t.lo > t.hi):
                i = int(np.argmax(t.lo > t.hi))
                raise ValueError(f"empty input box: lower bound {t.lo[i]} > upper bound {t.hi[i]} at input {i}")
            t.groups = [(np.atleast_2d(np.asarray(c, dtype=np.float64)), np.asarray(d, dtype=np.float64).reshape(-1))
                        for c, d in t.groups]

    @property
    def input_dim(self) -> int:
        """Number of inputs the boxes constrain."""
        return self.terms[0].lo.shape[0]

    def check_network(self, input_dim: int, output_dim: int) -> None:
        """Raise a ValueError naming the mismatch if the property does not fit the network."""
        for t in self.terms:
            if t.lo.shape[0] != input_dim:
                raise ValueError(f"property has {t.lo.shape[0]} inputs, network has {input_dim}")
            for c, _ in t.groups:
                if c.shape[1] != output_dim:
                    raise ValueError(f"property constrains {c.shape[1]} outputs, network has {output_dim}")

    def is_counterexample(self, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> bool:
        """True iff input ``x`` with output ``y`` satisfies a violating term (within ``tol``)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if self.ball is not None:
            norm, center, eps = self.ball
            if norm == "L2" and np.linalg.norm(x - center) > eps + tol:
                return False
        for t in self.terms:
            if np.all(x >= t.lo - tol) and np.all(x <= t.hi + tol):
                for c, d in t.groups:
                    if np.all(c @ y - d <= tol):
                        return True
        return False


def local_robustness(x: np.ndarray, label: int, eps: float, num_classes: int, norm: str = "Linf",
                     clip: tuple[float, float] | None = (0.0, 1.0)) -> Property:
    """Property "the class stays ``label`` in the eps-ball around ``x``" (violated by any other class >= label).

    For ``norm="L2"`` the bounds see the ball's bounding box (sound for ``holds``); a
    counterexample must lie in the ball itself.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if norm not in ("Linf", "L2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside 0..{num_classes - 1}")
    lo, hi = x - eps, x + eps
    if clip is not None:
        lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
    groups = []
    for j in range(num_classes):
        if j != label:
            c = np.zeros((1, num_classes))
            c[0, label], c[0, j] = 1.0, -1.0  # y_label - y_j <= 0 is a violation
            groups.append((c, np.zeros(1)))
    ball = ("L2", x, float(eps)) if norm == "L2" else None
    return Property([Term(lo, hi, groups)], f"robust_{norm}_{eps:g}_label{label}", ball,
                    {"label": int(label), "eps": float(eps), "norm": norm})
