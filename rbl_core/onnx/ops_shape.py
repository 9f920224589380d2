"""Layout, shape-arithmetic, resizing and elementwise ops as torch functions ``fn(step, *inputs)``.

The shape arithmetic (Shape, Gather, Cast, Concat, ...) runs when the file is loaded, on the static
shapes (:mod:`rbl_core.onnx.fold`); the same functions then run the data ops in ``forward``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from rbl_core.onnx.step import Step, attr_or_input, ints

_FLOAT_CODES = {1, 10, 11, 16}               # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_INT_CODES = {2, 3, 4, 5, 6, 7, 12, 13}      # the (u)int types: shape arithmetic runs in int64
_BOOL_CODE = 9


def elementwise(fn: Any) -> Any:
    """``fn(*inputs)`` as an op function that ignores the step."""
    return lambda step, *xs: fn(*xs)


def div(step: Step, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Div; integer inputs (shape arithmetic) divide with truncation, as ONNX says."""
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def mod(step: Step, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mod: the sign of the divisor (Python's %), or of the dividend with ``fmod=1``."""
    return torch.fmod(a, b) if step.attrs.get("fmod", 0) else torch.remainder(a, b)


def flatten(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Flatten to 2-d at ``axis``."""
    axis = int(step.attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def reshape(step: Step, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Reshape: 0 copies the input's dim (unless allowzero), -1 is inferred."""
    keep_zero = bool(step.attrs.get("allowzero", 0))
    return x.reshape([x.shape[i] if d == 0 and not keep_zero else d for i, d in enumerate(ints(shape))])


def transpose(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Transpose by ``perm`` (default: reverse the dims)."""
    perm = step.attrs.get("perm") or list(range(x.dim() - 1, -1, -1))
    return x.permute(*perm)


def concat(step: Step, *xs: torch.Tensor) -> torch.Tensor:
    """Concat along ``axis``."""
    return torch.cat([t for t in xs if t is not None], dim=int(step.attrs["axis"]))


def split(step: Step, x: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Split along ``axis`` into the given sizes, or into as many equal parts as the node has outputs."""
    axis = int(step.attrs.get("axis", 0))
    parts = attr_or_input(step, "split", sizes)
    if not parts:
        n = len(step.outputs)
        parts = [math.ceil(x.shape[axis] / n)] * (n - 1)
        parts.append(x.shape[axis] - sum(parts))
    return tuple(torch.split(x, list(parts), dim=axis))


def squeeze(step: Step, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """Squeeze the given axes (the reader makes "every size-1 dim" explicit, so the batch dim is never dropped)."""
    picked = attr_or_input(step, "axes", axes)
    return x.squeeze() if picked is None else x.squeeze(tuple(int(a) for a in picked)) if picked else x


def unsqueeze(step: Step, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """Unsqueeze at ``axes`` (negative axes count from the end of the output)."""
    picked = attr_or_input(step, "axes", axes)
    rank = x.dim() + len(picked)
    for axis in sorted(int(a) % rank for a in picked):
        x = x.unsqueeze(axis)
    return x


def slice_(step: Step, x: torch.Tensor, starts: torch.Tensor | None = None, ends: torch.Tensor | None = None,
           axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
    """Slice (attributes before opset 10, inputs since); python slicing clamps out-of-range bounds as ONNX does."""
    s = attr_or_input(step, "starts", starts)
    e = attr_or_input(step, "ends", ends)
    a = attr_or_input(step, "axes", axes) or list(range(len(s)))
    st = ints(steps) or [1] * len(s)
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, stride in zip(s, e, a, st):
        if stride < 1:
            raise step.unsupported(f"step {stride} (only positive steps)")
        index[int(axis) % x.dim()] = slice(start, end, stride)
    return x[tuple(index)]


def gather(step: Step, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Gather along ``axis`` (negative indices count from the end)."""
    axis = int(step.attrs.get("axis", 0)) % x.dim()
    idx = indices.long() % x.shape[axis]
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def expand(step: Step, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Expand with ONNX's two-way broadcasting."""
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


def cast(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Cast: floats keep the run's float dtype (float32 for attacks, float64 for the verifier)."""
    to = int(step.attrs["to"])
    if to in _FLOAT_CODES:
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    if to in _INT_CODES:
        return x.long()
    if to == _BOOL_CODE:
        return x.bool()
    raise step.unsupported(f"cast to TensorProto type {to}")


def shape(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Shape (with opset 15's start/end)."""
    dims = list(x.shape)[int(step.attrs.get("start", 0)):step.attrs.get("end")]
    return torch.tensor(dims, dtype=torch.long)


def constant_of_shape(step: Step, dims: torch.Tensor) -> torch.Tensor:
    """ConstantOfShape: a tensor of ``dims`` filled with ``value`` (default float 0)."""
    value = step.attrs.get("value")
    fill = value.reshape(-1)[0] if isinstance(value, torch.Tensor) else torch.tensor(0.0)
    return torch.full(ints(dims), fill.item(), dtype=fill.dtype)


def range_(step: Step, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Range: ``start, start + delta, ...`` below ``limit``."""
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def pad(step: Step, x: torch.Tensor, pads: torch.Tensor | None = None, value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None) -> torch.Tensor:
    """Pad (constant, reflect or edge); ONNX lists all begins then all ends, F.pad the last dim first."""
    p = attr_or_input(step, "pads", pads)
    picked = ints(axes) or list(range(x.dim()))
    rank = len(picked)
    full = {int(a) % x.dim(): (p[i], p[i + rank]) for i, a in enumerate(picked)}
    mode = step.attrs.get("mode", "constant")
    flat: list[int] = []
    for d in reversed(range(x.dim())):
        flat += list(full.get(d, (0, 0)))
    while len(flat) > 2 and flat[-2:] == [0, 0]:
        flat = flat[:-2]   # torch pads only trailing dims in reflect/edge mode
    if mode == "constant":
        fill = float(value) if value is not None and value.numel() else float(step.attrs.get("value", 0.0))
        return F.pad(x, flat, value=fill)
    if mode in ("reflect", "edge"):
        return F.pad(x, flat, mode="reflect" if mode == "reflect" else "replicate")
    raise step.unsupported(f"mode {mode!r}")


def _source_coords(step: Step, mode: str, n_out: int, n_in: int, scale: float) -> torch.Tensor:
    d = torch.arange(n_out, dtype=torch.float64)
    if mode == "half_pixel":
        return (d + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (d + 0.5) / scale - 0.5 if n_out > 1 else torch.zeros(n_out, dtype=torch.float64)
    if mode == "align_corners":
        return d * (n_in - 1) / (n_out - 1) if n_out > 1 else torch.zeros(n_out, dtype=torch.float64)
    if mode == "asymmetric":
        return d / scale
    raise step.unsupported(f"coordinate_transformation_mode {mode!r}")


def _nearest(step: Step, src: torch.Tensor) -> torch.Tensor:
    how = step.attrs.get("nearest_mode", "round_prefer_floor")
    if how == "floor":
        return torch.floor(src)
    if how == "ceil":
        return torch.ceil(src)
    if how == "round_prefer_floor":
        return torch.ceil(src - 0.5)
    if how == "round_prefer_ceil":
        return torch.floor(src + 0.5)
    raise step.unsupported(f"nearest_mode {how!r}")


def _interpolate(step: Step, x: torch.Tensor, out_sizes: list[int], scales: list[float], mode: str,
                 coords: str) -> torch.Tensor:
    """Separable nearest/linear resize, one axis at a time, with ONNX's coordinate and rounding rules."""
    for axis, (n_out, scale) in enumerate(zip(out_sizes, scales)):
        n_in = x.shape[axis]
        if n_out == n_in and scale == 1.0:
            continue
        src = _source_coords(step, coords, n_out, n_in, scale)
        if mode == "nearest":
            idx = _nearest(step, src).long().clamp(0, n_in - 1).to(x.device)
            x = x.index_select(axis, idx)
            continue
        lo = torch.floor(src)
        w = (src - lo).to(x.dtype).to(x.device)
        i0 = lo.long().clamp(0, n_in - 1).to(x.device)
        i1 = (lo.long() + 1).clamp(0, n_in - 1).to(x.device)
        shape = [1] * x.dim()
        shape[axis] = n_out
        w = w.reshape(shape)
        x = x.index_select(axis, i0) * (1 - w) + x.index_select(axis, i1) * w
    return x


def resize(step: Step, x: torch.Tensor, roi: torch.Tensor | None = None, scales: torch.Tensor | None = None,
           sizes: torch.Tensor | None = None) -> torch.Tensor:
    """Resize (nearest or linear; opset 10 passes the scales second)."""
    if step.opset < 11:
        scales, roi = roi, None
    mode = step.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise step.unsupported(f"mode {mode!r} (nearest and linear are supported)")
    if step.attrs.get("antialias", 0) or step.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise step.unsupported("antialias or keep_aspect_ratio_policy")
    coords = step.attrs.get("coordinate_transformation_mode", "half_pixel" if step.opset >= 11 else "asymmetric")
    if sizes is not None and sizes.numel():
        out = ints(sizes)
        factors = [o / i for o, i in zip(out, x.shape)]
    else:
        factors = [float(s) for s in scales.reshape(-1).tolist()]
        out = [int(math.floor(i * s)) for i, s in zip(x.shape, factors)]
    return _interpolate(step, x, out, factors, mode, coords)


def upsample(step: Step, x: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample (opsets 7-9): asymmetric coordinates, nearest rounds down."""
    factors = [float(s) for s in (scales.reshape(-1).tolist() if scales is not None else step.attrs["scales"])]
    mode = step.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise step.unsupported(f"mode {mode!r}")
    floor_step = Step(step.op, step.name, step.inputs, step.outputs, {"nearest_mode": "floor"}, step.source,
                      step.opset)
    out = [int(math.floor(i * s)) for i, s in zip(x.shape, factors)]
    return _interpolate(floor_step, x, out, factors, mode, "asymmetric")


def dropout(step: Step, x: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference Dropout: the identity, plus an all-true mask for graphs that ask for it."""
    return x, torch.ones_like(x, dtype=torch.bool)
