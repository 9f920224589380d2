"""The ONNX ops the interpreter of :mod:`robustbench_local.sources.onnx_module` runs, each as torch functions.

Every op is a function ``(step, *inputs) -> output`` over torch tensors, so gradients flow through the
whole graph. ``OPS`` maps op type to function; ``HINTS`` adds advice for ops that are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from robustbench_local.sources.errors import UnsupportedOnnxOp

# Inputs that ops take as constants, resolved when the file is loaded: (op, input index) -> attribute name.
STATIC_INPUTS = {("Reshape", 1): "shape", ("Squeeze", 1): "axes", ("Unsqueeze", 1): "axes",
                  ("Dropout", 2): "training_mode"}
FLOAT_TYPES = {1, 10, 11, 16}   # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else '(no message)'}"


@dataclass(frozen=True)
class Step:
    """One graph node, ready to run: its op function, tensor names and decoded attributes."""

    op: str
    name: str                    # the node's name, or "#<index>" when the file leaves it empty
    inputs: tuple[str, ...]      # "" marks an omitted optional input
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    fn: Callable[..., Any]
    source: str                  # the file, for error messages raised while running

    def unsupported(self, why: str) -> UnsupportedOnnxOp:
        """An error naming this node, its op and ``why`` it cannot be run."""
        return UnsupportedOnnxOp(f"{self.source}: node {self.name!r} ({self.op}): {why}")


# ---- padding shared by Conv and the pools -------------------------------------------------------------

def _explicit_pads(step: Step, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial dim, resolving ``auto_pad`` against the actual input size."""
    rank = len(kernel)
    auto_pad = step.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2   # SAME_UPPER puts the extra pixel at the end, SAME_LOWER at the start
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins, ends
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    if auto_pad != "NOTSET":
        raise step.unsupported(f"auto_pad {auto_pad!r}")
    pads = list(step.attrs.get("pads", [0] * (2 * rank)))
    return pads[:rank], pads[rank:]


def _pad_for_torch(step: Step, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int], value: float, limit: bool, explicit_ok: bool = True
                   ) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(x, padding)`` for a torch conv/pool: symmetric pads go to torch, others are applied with ``F.pad``.

    torch's own ``padding`` is symmetric and, for pools (``limit``), at most half the kernel; anything else
    is padded explicitly with ``value`` (0 for Conv, -inf for MaxPool) and torch gets zero padding.
    """
    begins, ends = _explicit_pads(step, x, kernel, strides, dilations)
    fits = begins == ends and (not limit or all(p <= k // 2 for p, k in zip(begins, kernel)))
    if fits:
        return x, tuple(begins)
    if not explicit_ok:
        raise step.unsupported(f"pads {begins + ends} with count_include_pad=0 (asymmetric or over half the kernel)")
    flat: list[int] = []
    for b, e in reversed(list(zip(begins, ends))):   # F.pad lists the last dimension first
        flat += [b, e]
    return F.pad(x, flat, value=value), (0,) * len(kernel)


# ---- op implementations: fn(step, *inputs) -> tensor or tuple of tensors ----------------------------

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _conv(step: Step, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    rank = w.dim() - 2
    if rank not in _CONV:
        raise step.unsupported(f"{rank}-d convolution")
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    x, padding = _pad_for_torch(step, x, w.shape[2:], strides, dilations, 0.0, limit=False)
    return _CONV[rank](x, w, b, stride=strides, padding=padding, dilation=dilations,
                       groups=int(step.attrs.get("group", 1)))


def _max_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    kernel = list(step.attrs["kernel_shape"])
    rank = len(kernel)
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    x, padding = _pad_for_torch(step, x, kernel, strides, dilations, float("-inf"), limit=True)
    return _MAX_POOL[rank](x, kernel, strides, padding, dilation=dilations,
                           ceil_mode=bool(step.attrs.get("ceil_mode", 0)))


def _avg_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    kernel = list(step.attrs["kernel_shape"])
    rank = len(kernel)
    strides = list(step.attrs.get("strides", [1] * rank))
    include_pad = bool(step.attrs.get("count_include_pad", 0))
    x, padding = _pad_for_torch(step, x, kernel, strides, [1] * rank, 0.0, limit=True, explicit_ok=include_pad)
    return _AVG_POOL[rank](x, kernel, strides, padding, ceil_mode=bool(step.attrs.get("ceil_mode", 0)),
                           count_include_pad=include_pad)


def _global_avg_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _batch_norm(step: Step, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor) -> torch.Tensor:
    # Inference form: the stored running statistics, never the batch's own (training_mode is refused at load).
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(step.attrs.get("epsilon", 1e-5)))


def _gemm(step: Step, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    alpha, beta = float(step.attrs.get("alpha", 1.0)), float(step.attrs.get("beta", 1.0))
    if step.attrs.get("transB", 0) and not step.attrs.get("transA", 0) and alpha == beta == 1.0 \
            and (c is None or c.dim() == 1):
        # How torch exports nn.Linear: F.linear runs the same kernel, so logits and gradients match bit for bit.
        return F.linear(a, b, c)
    if step.attrs.get("transA", 0):
        a = a.t()
    if step.attrs.get("transB", 0):
        b = b.t()
    y = a @ b if alpha == 1.0 else alpha * (a @ b)
    if c is None:
        return y
    return y + (c if beta == 1.0 else beta * c)


def _flatten(step: Step, x: torch.Tensor) -> torch.Tensor:
    axis = int(step.attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _reshape(step: Step, x: torch.Tensor) -> torch.Tensor:
    # ONNX: 0 copies the input's dim at that position (unless allowzero), -1 is inferred (torch does that too).
    keep_zero = bool(step.attrs.get("allowzero", 0))
    shape = [x.shape[i] if d == 0 and not keep_zero else d for i, d in enumerate(step.attrs["shape"])]
    return x.reshape(shape)


def _transpose(step: Step, x: torch.Tensor) -> torch.Tensor:
    perm = step.attrs.get("perm") or list(range(x.dim() - 1, -1, -1))
    return x.permute(*perm)


def _concat(step: Step, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat([t for t in xs if t is not None], dim=int(step.attrs["axis"]))


def _squeeze(step: Step, x: torch.Tensor) -> torch.Tensor:
    axes = step.attrs.get("axes")
    # No axes: every size-1 dim, as ONNX says (a batch of one image loses its batch dim, there as here).
    return x.squeeze() if axes is None else x.squeeze(tuple(int(a) for a in axes))


def _unsqueeze(step: Step, x: torch.Tensor) -> torch.Tensor:
    rank = x.dim() + len(step.attrs["axes"])   # negative axes count from the end of the output
    for axis in sorted(int(a) + rank if a < 0 else int(a) for a in step.attrs["axes"]):
        x = x.unsqueeze(axis)
    return x


def _dropout(step: Step, x: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    # Inference: the identity, with an all-true mask for graphs that ask for the second output.
    return x, torch.ones_like(x, dtype=torch.bool)


def _leaky_relu(step: Step, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, float(step.attrs.get("alpha", 0.01)))


def _elementwise(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda step, *xs: fn(*xs)


OPS: dict[str, Callable[..., Any]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _elementwise(torch.matmul),
    "Add": _elementwise(torch.add), "Sub": _elementwise(torch.sub), "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "Relu": _elementwise(F.relu), "LeakyRelu": _leaky_relu, "Sigmoid": _elementwise(torch.sigmoid),
    "Tanh": _elementwise(torch.tanh),
    "MaxPool": _max_pool, "AveragePool": _avg_pool, "GlobalAveragePool": _global_avg_pool,
    "BatchNormalization": _batch_norm, "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "Concat": _concat, "Identity": _elementwise(lambda x: x), "Dropout": _dropout,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
}
# Constant is evaluated when the file is loaded and never becomes a step.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*OPS, "Constant"]))
# Shape arithmetic comes from x.view(x.size(0), -1) exported with a dynamic batch; torch.flatten avoids it.
_SHAPE_HINT = "; flatten with nn.Flatten or torch.flatten(x, 1) instead of x.view(x.size(0), -1) and export again"
HINTS = {"Shape": _SHAPE_HINT, "Gather": _SHAPE_HINT, "Cast": _SHAPE_HINT,
          "Softmax": "; export the logits, without the final softmax"}
