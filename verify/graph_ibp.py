"""Interval bounds (IBP) over the reader's graph: every step of :class:`rbl_core.onnx.OnnxGraph`, one rule per op.

For networks the dense IR cannot hold (a CIFAR ResNet: too big; a ViT: products of two variables)
this is what the verifier can say: a box around every output over an input box. ``HOW`` states per op
how it is bounded. Rules: monotone ops map ``lo`` and ``hi``; affine ops with signed weights run in
centre/radius form with ``|W|``; products of two variables (Mul, MatMul) take the interval product;
Softmax, LayerNormalization, Div, Pow and Gelu have their own sound rules. The pass runs in float64
and widens every step's box outward by ``REL_SLACK * |v| + ABS_SLACK``, so that the float32 inference
of the same graph (onnxruntime, the attacks) stays inside.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from rbl_core.onnx import OPS, OnnxGraph
from rbl_core.onnx.step import Step

from .network import UnsupportedOperationError
from .spec import Property

REL_SLACK, ABS_SLACK = 1e-6, 1e-9   # per step: covers float32 rounding of the inference kernels
_EXACT = "exact (affine or monotone: the box of the image is the image of the box's corners)"
_PWL = "exact interval (monotone piecewise-linear)"
_RELAX = "relaxation (monotone: bounded at the box's ends)"
HOW: dict[str, str] = {
    **{op: _EXACT for op in ("Conv", "ConvTranspose", "Gemm", "BatchNormalization", "AveragePool", "GlobalAveragePool",
                             "ReduceMean", "ReduceSum", "Add", "Sub", "Neg", "Flatten", "Reshape", "Transpose",
                             "Concat", "Split", "Squeeze", "Unsqueeze", "Slice", "Gather", "Expand", "Pad", "Identity",
                             "Dropout", "Cast", "Resize", "Upsample")},
    **{op: _PWL for op in ("Relu", "LeakyRelu", "MaxPool", "GlobalMaxPool", "Clip", "Sign")},
    **{op: _RELAX for op in ("Sigmoid", "Tanh", "Erf", "Sqrt")},
    "Gelu": "relaxation (ends of the box, and GELU's minimum where the box holds it)",
    "Mul": "exact with a constant; interval product for two input-dependent tensors",
    "MatMul": "exact with a constant; interval matrix product (centre/radius) for two input-dependent tensors",
    "Div": "exact by a constant; by an input-dependent tensor: its reciprocal box, refused if it holds 0",
    "Pow": "square (exponent 2) or monotone (odd or positive exponent on a non-negative box); else refused",
    "Softmax": "relaxation: sigmoid(lo_i - logsumexp_{j!=i} hi_j) .. sigmoid(hi_i - logsumexp_{j!=i} lo_j)",
    "LayerNormalization": "relaxation: centred box, variance box, and |output| <= sqrt(n) before scale and bias",
}


@dataclass(frozen=True)
class Box:
    """Elementwise bounds ``lo <= v <= hi`` of one tensor (a batch of boxes)."""

    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """The bounded tensor's shape."""
        return self.lo.shape


def _widen(b: Box) -> Box:
    if not b.lo.is_floating_point():
        return b
    return Box(b.lo - REL_SLACK * b.lo.abs() - ABS_SLACK, b.hi + REL_SLACK * b.hi.abs() + ABS_SLACK)


def _ends(args: list, end: str) -> list:
    return [getattr(a, end) if isinstance(a, Box) else a for a in args]


def _monotone(step: Step, args: list) -> Any:
    fn = OPS[step.op].fn
    lo, hi = fn(step, *_ends(args, "lo")), fn(step, *_ends(args, "hi"))
    if isinstance(lo, tuple):
        return tuple(Box(a, b) for a, b in zip(lo, hi))
    return Box(lo, hi)


def _signed_linear(step: Step, args: list, radius_args: Callable[[list], tuple[Step, list]]) -> Box:
    """``f(centre) +- f_abs(radius)`` for an affine ``f`` of its one box argument."""
    fn = OPS[step.op].fn
    centre = [(a.lo + a.hi) / 2 if isinstance(a, Box) else a for a in args]
    rad = [(a.hi - a.lo) / 2 if isinstance(a, Box) else a for a in args]
    c = fn(step, *centre)
    r_step, r_args = radius_args(rad)
    r = fn(r_step, *r_args)
    return Box(c - r, c + r)


def _abs_consts(args: list, box_at: int, drop_bias_at: int | None = None) -> list:
    out = [a.abs() if isinstance(a, torch.Tensor) and i != box_at and a.is_floating_point() else a
           for i, a in enumerate(args)]
    if drop_bias_at is not None and drop_bias_at < len(out):
        out[drop_bias_at] = None
    return out


def _product(a: Box | torch.Tensor, b: Box | torch.Tensor) -> Box:
    a = a if isinstance(a, Box) else Box(a, a)
    b = b if isinstance(b, Box) else Box(b, b)
    corners = torch.stack(torch.broadcast_tensors(a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi))
    return Box(corners.amin(0), corners.amax(0))


def _matmul_boxes(a: Box, b: Box) -> Box:
    ac, ar = (a.lo + a.hi) / 2, (a.hi - a.lo) / 2
    bc, br = (b.lo + b.hi) / 2, (b.hi - b.lo) / 2
    c = ac @ bc
    r = ac.abs() @ br + ar @ bc.abs() + ar @ br
    return Box(c - r, c + r)


def _linear_rule(step: Step, args: list) -> Box:
    boxes = [i for i, a in enumerate(args) if isinstance(a, Box)]
    op = step.op
    if op in ("Mul", "MatMul") and len(boxes) == 2:
        return _product(args[0], args[1]) if op == "Mul" else _matmul_boxes(args[0], args[1])
    if len(boxes) != 1:
        raise UnsupportedOperationError(f"{step.source}: node {step.name!r} ({op}): interval bounds of "
                                        f"{len(boxes)} input-dependent operands are not implemented")
    at = boxes[0]
    if op == "BatchNormalization":
        def rad(r: list) -> tuple[Step, list]:
            x, scale, _, mean, var = r
            return step, [x, scale.abs(), torch.zeros_like(mean), torch.zeros_like(mean), var]
    elif op == "Gemm":
        def rad(r: list) -> tuple[Step, list]:
            return replace(step, attrs={**step.attrs, "alpha": abs(float(step.attrs.get("alpha", 1.0)))}), \
                _abs_consts(r, at, drop_bias_at=2)
    else:
        def rad(r: list) -> tuple[Step, list]:
            return step, _abs_consts(r, at, drop_bias_at=2 if op in ("Conv", "ConvTranspose") else None)
    return _signed_linear(step, args, rad)


def _div(step: Step, args: list) -> Box:
    a, b = args
    if not isinstance(b, Box):
        return _linear_rule(step, args)
    if not bool(((b.lo > 0) | (b.hi < 0)).all()):
        raise UnsupportedOperationError(f"{step.source}: node {step.name!r} (Div): the divisor's box holds 0")
    return _product(a, Box(1 / b.hi, 1 / b.lo))


def _square(b: Box) -> Box:
    lo2, hi2 = b.lo * b.lo, b.hi * b.hi
    straddle = (b.lo <= 0) & (b.hi >= 0)
    return Box(torch.where(straddle, torch.zeros_like(lo2), torch.minimum(lo2, hi2)), torch.maximum(lo2, hi2))


def _pow(step: Step, args: list) -> Box:
    x, p = args
    if isinstance(p, Box) or p.numel() != 1:
        raise UnsupportedOperationError(f"{step.source}: node {step.name!r} (Pow): only a constant scalar exponent")
    e = float(p)
    if e == 2.0:
        return _square(x)
    if (e == int(e) and int(e) % 2 == 1) or (e > 0 and bool((x.lo >= 0).all())):
        return _monotone(step, args)
    raise UnsupportedOperationError(f"{step.source}: node {step.name!r} (Pow): exponent {e} on a box that may be "
                                    "negative has no interval rule here")


def _sub(step: Step, args: list) -> Box:
    a, b = (x if isinstance(x, Box) else Box(x, x) for x in args)
    return Box(a.lo - b.hi, a.hi - b.lo)


def _neg(step: Step, args: list) -> Box:
    return Box(-args[0].hi, -args[0].lo)


def _softmax(step: Step, args: list) -> Box:
    x = args[0]
    axis = int(step.attrs.get("axis", -1 if step.opset >= 13 else 1)) % x.lo.dim()
    lo, hi = x.lo, x.hi
    if step.opset < 13:
        lo, hi = lo.flatten(axis), hi.flatten(axis)
        axis = lo.dim() - 1
    lo, hi = lo.movedim(axis, -1), hi.movedim(axis, -1)
    k = lo.shape[-1]
    if k == 1:
        one = torch.ones_like(x.lo)
        return Box(one, one)
    others = ~torch.eye(k, dtype=torch.bool, device=lo.device)   # row i: every j != i

    def lse_others(v: torch.Tensor) -> torch.Tensor:
        rows = v.unsqueeze(-2).expand(*v.shape[:-1], k, k)
        return torch.logsumexp(rows.masked_fill(~others, float("-inf")), dim=-1)

    low = torch.sigmoid(lo - lse_others(hi)).movedim(-1, axis)
    up = torch.sigmoid(hi - lse_others(lo)).movedim(-1, axis)
    return Box(low.reshape(x.lo.shape), up.reshape(x.lo.shape))


def _layer_norm(step: Step, args: list) -> Box:
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = int(step.attrs.get("axis", -1)) % x.lo.dim()
    dims = tuple(range(axis, x.lo.dim()))
    n = math.prod(x.lo.shape[axis:])
    c, r = (x.lo + x.hi) / 2, (x.hi - x.lo) / 2
    # d_i = x_i - mean(x): coefficient 1 - 1/n on x_i and -1/n on the others
    dc = c - c.mean(dim=dims, keepdim=True)
    dr = r + (r.sum(dim=dims, keepdim=True) - 2 * r) / n
    d = Box(dc - dr, dc + dr)
    sq = _square(d)
    eps = float(step.attrs.get("epsilon", 1e-5))
    inv = Box(1 / torch.sqrt(sq.hi.mean(dim=dims, keepdim=True) + eps),
              1 / torch.sqrt(sq.lo.mean(dim=dims, keepdim=True) + eps))
    y = _product(d, inv)
    # |d_i| / sqrt(mean(d^2)) <= sqrt(n): the normalised value never leaves [-sqrt(n), sqrt(n)]
    y = Box(y.lo.clamp(min=-math.sqrt(n)), y.hi.clamp(max=math.sqrt(n)))
    y = _signed_linear(Step("Mul", step.name, ("", ""), ("",)), [y, scale], lambda r: (
        Step("Mul", step.name, ("", ""), ("",)), [r[0], r[1].abs()]))
    return y if bias is None else Box(y.lo + bias, y.hi + bias)


_GELU_MIN_AT = -0.7517916   # argmin of x * Phi(x) (the tanh form's is within 1e-3 of it)


def _gelu(step: Step, args: list) -> Box:
    x = args[0]
    fn = OPS["Gelu"].fn
    f_lo, f_hi = fn(step, x.lo), fn(step, x.hi)
    at_min = fn(step, torch.full_like(x.lo, _GELU_MIN_AT)) - 1e-4   # slack for the approximate argmin
    holds_min = (x.lo <= _GELU_MIN_AT) & (x.hi >= _GELU_MIN_AT)
    return Box(torch.where(holds_min, at_min, torch.minimum(f_lo, f_hi)), torch.maximum(f_lo, f_hi))


def _leaky(step: Step, args: list) -> Box:
    if float(step.attrs.get("alpha", 0.01)) < 0:
        raise UnsupportedOperationError(f"{step.source}: node {step.name!r} (LeakyRelu): a negative slope")
    return _monotone(step, args)


_RULES: dict[str, Callable[[Step, list], Any]] = {
    **{op: _monotone for op, how in HOW.items() if how in (_EXACT, _PWL, _RELAX)},
    **{op: _linear_rule for op in ("Conv", "ConvTranspose", "Gemm", "BatchNormalization", "Mul", "MatMul")},
    "Sub": _sub, "Neg": _neg, "Div": _div, "Pow": _pow, "Softmax": _softmax, "LayerNormalization": _layer_norm,
    "Gelu": _gelu, "LeakyRelu": _leaky,
}


def interval_bounds(graph: OnnxGraph, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on ``graph``'s output over each box ``[lo[i], hi[i]]`` (inputs shaped like the graph's, batch first)."""
    g = copy.deepcopy(graph).double()

    def hook(step: Step, args: list) -> Any:
        rule = _RULES.get(step.op)   # load-only ops (Shape, Mod, ...) never reach here: they are folded
        if rule is None:
            raise UnsupportedOperationError(f"{step.source}: node {step.name!r} ({step.op}) has no interval rule")
        if not any(isinstance(a, Box) for a in args):
            return OPS[step.op].fn(step, *args)
        out = rule(step, args)
        return tuple(_widen(b) for b in out) if isinstance(out, tuple) else _widen(out)

    with torch.no_grad():
        out = g.run(Box(lo.double(), hi.double()), hook)
    return out.lo, out.hi


def proves(graph: OnnxGraph, prop: Property) -> bool:
    """Whether the interval bounds alone show that no input in ``prop``'s boxes reaches its unsafe set."""
    shape = tuple(graph.sample_shape)
    for term in prop.terms:
        lo = torch.as_tensor(term.lo, dtype=torch.float64).reshape(1, *shape)
        hi = torch.as_tensor(term.hi, dtype=torch.float64).reshape(1, *shape)
        ylo, yhi = (t.reshape(-1) for t in interval_bounds(graph, lo, hi))
        for mat, rhs in term.groups:
            mat_t = torch.as_tensor(mat, dtype=torch.float64)
            # min over the output box of each row of C y; the group is unreachable when one row stays above d
            row_min = mat_t.clamp(min=0) @ ylo + mat_t.clamp(max=0) @ yhi
            if not bool((row_min > torch.as_tensor(rhs, dtype=torch.float64)).any()):
                return False
    return True
