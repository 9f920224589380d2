"""The linear ops of the graph IR on intervals (IBP) and transposed (CROWN back-substitution).

Each transposed op maps coefficients ``A`` (B, S, *out_shape) on a node's output to
coefficients on its input(s) plus a constant (``A . bias``) — a convolution by
``conv_transpose2d``, never a dense Jacobian — and returns the rounding allowance of that
step: ``gamma(fan) * sum(|A| * (|W| xmax + |b|))`` where ``xmax`` bounds ``|input|``
(see :mod:`verify.graph.rounding`). Constants are accumulated in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ir import Node
from .rounding import center_radius, gamma, widen

F64 = torch.float64


def forward_fan(node: Node) -> int:
    """Terms per output value of the op (for its rounding allowance)."""
    if node.op == "linear":
        return node.params["weight"].shape[1]
    if node.op == "conv2d":
        w = node.params["weight"]
        return w.shape[1] * w.shape[2] * w.shape[3]
    return 1


def backward_fan(node: Node) -> int:
    """Terms per input coefficient of the transposed op."""
    if node.op == "linear":
        return node.params["weight"].shape[0]
    if node.op == "conv2d":
        w = node.params["weight"]
        return w.shape[0] // node.params["groups"] * w.shape[2] * w.shape[3]
    return 1


def abs_apply(node: Node, x: torch.Tensor) -> torch.Tensor:
    """The op with ``|weights|`` and no bias/shift applied to ``x`` (radii and magnitudes)."""
    p = node.params
    if node.op == "linear":
        return F.linear(x, p["weight"].abs())
    if node.op == "conv2d":
        return F.conv2d(x, p["weight"].abs(), None, p["stride"], p["padding"], p["dilation"], p["groups"])
    if node.op == "affine":
        return x * p["scale"].abs()
    raise ValueError(f"op {node.op!r} has no weights")


def bias_of(node: Node) -> torch.Tensor | None:
    """The op's additive constant (bias or shift), None if it has none."""
    return node.params.get("bias", node.params.get("shift"))


def magnitude(node: Node, xmax: torch.Tensor) -> torch.Tensor:
    """An upper bound of ``|W| xmax + |b|`` per output value (B, *shape)."""
    m = abs_apply(node, xmax)
    b = bias_of(node)
    if b is None:
        return m
    if node.op == "conv2d":
        b = b.reshape(-1, 1, 1)
    return m + b.abs()


def interval(node: Node, los: list[torch.Tensor], his: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound interval of the node's output from intervals of its inputs (IBP), outward rounded."""
    lo, hi = los[0], his[0]
    if node.op == "relu":
        return lo.clamp(min=0), hi.clamp(min=0)  # exact: no rounding
    if node.op == "reshape":
        shape = (lo.shape[0],) + node.shape
        return lo.reshape(shape), hi.reshape(shape)
    if node.op == "add":
        return widen(lo + los[1], hi + his[1], 0.0)  # one rounding, covered by widen's relative term
    if node.op not in ("linear", "conv2d", "affine"):
        raise ValueError(f"no interval rule for op {node.op!r}")
    mid, rad = center_radius(lo, hi)
    from .ir import apply
    out_mid = apply(node, [mid])
    out_rad = abs_apply(node, rad)
    err = gamma(forward_fan(node), lo.dtype) * magnitude(node, mid.abs() + rad)
    return widen(out_mid - out_rad, out_mid + out_rad, err)


def _flat_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dim after (B, S), accumulated in float64."""
    return t.flatten(2).sum(-1, dtype=F64)


def transpose(node: Node, A: torch.Tensor, in_shape: tuple[int, ...], mag: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``A`` on the output of a linear/conv2d/affine/reshape node -> (A on its input, A . bias, allowance).

    ``mag``: :func:`magnitude` of the node at its input's ``xmax`` (unused for reshape).
    """
    B, S = A.shape[:2]
    p = node.params
    if node.op == "reshape":
        zero = torch.zeros(B, S, dtype=F64, device=A.device)
        return A.reshape((B, S) + tuple(in_shape)), zero, zero
    err = gamma(backward_fan(node), A.dtype) * _flat_sum(A.abs() * mag.unsqueeze(1))
    if node.op == "linear":
        const = _flat_sum(A.to(F64) @ p["bias"].to(F64).unsqueeze(-1))
        return A @ p["weight"], const, err
    if node.op == "affine":
        const = _flat_sum(A * p["shift"])  # one rounding per product: covered by err (mag holds |shift|)
        return A * p["scale"], const, err
    if node.op == "conv2d":
        w = p["weight"]
        c_out, ho, wo = A.shape[2:]
        h_in, w_in = in_shape[1:]
        # output_padding recovers the input size a strided conv's floor division lost
        out_pad = [size - ((o - 1) * s - 2 * pad + d * (k - 1) + 1) for size, o, s, pad, d, k in
                   zip((h_in, w_in), (ho, wo), p["stride"], p["padding"], p["dilation"], w.shape[2:])]
        flat = A.reshape(B * S, c_out, ho, wo)
        a_in = F.conv_transpose2d(flat, w, None, p["stride"], p["padding"], tuple(out_pad), p["groups"],
                                  p["dilation"])
        const = A.sum((-2, -1), dtype=F64) @ p["bias"].to(F64)
        return a_in.reshape((B, S) + tuple(in_shape)), const, err
    raise ValueError(f"op {node.op!r} is not a linear op")
