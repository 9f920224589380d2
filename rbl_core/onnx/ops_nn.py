"""Layer ops (Conv, pools, normalisation, Gemm, activations) as torch functions ``fn(step, *inputs)``.

Each function runs the ONNX semantics on torch tensors so gradients flow through the whole graph;
anything an attribute asks for that torch cannot do here is refused with :meth:`Step.unsupported`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from rbl_core.onnx.step import Step, attr_or_input, ints

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


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
    """``(x, padding)``: symmetric pads go to torch, others are applied with ``F.pad`` (value 0 or -inf)."""
    begins, ends = _explicit_pads(step, x, kernel, strides, dilations)
    # torch's own padding is symmetric and, for pools (limit), at most half the kernel
    if begins == ends and (not limit or all(p <= k // 2 for p, k in zip(begins, kernel))):
        return x, tuple(begins)
    if not explicit_ok:
        raise step.unsupported(f"pads {begins + ends} with count_include_pad=0 (asymmetric or over half the kernel)")
    flat: list[int] = []
    for b, e in reversed(list(zip(begins, ends))):   # F.pad lists the last dimension first
        flat += [b, e]
    return F.pad(x, flat, value=value), (0,) * len(kernel)


def _rank(step: Step, rank: int) -> int:
    if rank not in _CONV:
        raise step.unsupported(f"{rank}-d spatial input")
    return rank


# ---- convolution and pooling --------------------------------------------------------------------------

def conv(step: Step, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Conv (groups, dilations, strides, explicit or SAME/VALID padding)."""
    rank = _rank(step, w.dim() - 2)
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    x, padding = _pad_for_torch(step, x, w.shape[2:], strides, dilations, 0.0, limit=False)
    return _CONV[rank](x, w, b, stride=strides, padding=padding, dilation=dilations,
                       groups=int(step.attrs.get("group", 1)))


def conv_transpose(step: Step, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """ConvTranspose with explicit pads (output_shape and auto_pad are refused at load)."""
    rank = _rank(step, w.dim() - 2)
    pads = list(step.attrs.get("pads", [0] * (2 * rank)))
    if pads[:rank] != pads[rank:]:
        raise step.unsupported(f"asymmetric pads {pads}")
    return _CONV_T[rank](x, w, b, stride=list(step.attrs.get("strides", [1] * rank)), padding=pads[:rank],
                         output_padding=list(step.attrs.get("output_padding", [0] * rank)),
                         groups=int(step.attrs.get("group", 1)),
                         dilation=list(step.attrs.get("dilations", [1] * rank)))


def max_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    """MaxPool (padding with -inf where torch's own padding cannot express it)."""
    kernel = list(step.attrs["kernel_shape"])
    rank = _rank(step, len(kernel))
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    x, padding = _pad_for_torch(step, x, kernel, strides, dilations, float("-inf"), limit=True)
    return _MAX_POOL[rank](x, kernel, strides, padding, dilation=dilations,
                           ceil_mode=bool(step.attrs.get("ceil_mode", 0)))


def avg_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    """AveragePool (count_include_pad as the attribute says)."""
    kernel = list(step.attrs["kernel_shape"])
    rank = _rank(step, len(kernel))
    if any(d != 1 for d in step.attrs.get("dilations", [])):
        raise step.unsupported(f"dilations {step.attrs['dilations']}")
    strides = list(step.attrs.get("strides", [1] * rank))
    include_pad = bool(step.attrs.get("count_include_pad", 0))
    x, padding = _pad_for_torch(step, x, kernel, strides, [1] * rank, 0.0, limit=True, explicit_ok=include_pad)
    return _AVG_POOL[rank](x, kernel, strides, padding, ceil_mode=bool(step.attrs.get("ceil_mode", 0)),
                           count_include_pad=include_pad)


def global_avg_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    """GlobalAveragePool: the mean over every spatial dim, kept as size 1."""
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def global_max_pool(step: Step, x: torch.Tensor) -> torch.Tensor:
    """GlobalMaxPool: the max over every spatial dim, kept as size 1."""
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# ---- normalisation -----------------------------------------------------------------------------------

def batch_norm(step: Step, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
               var: torch.Tensor) -> torch.Tensor:
    """BatchNormalization in inference form: the stored running statistics (training_mode is refused at load)."""
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(step.attrs.get("epsilon", 1e-5)))


def layer_norm(step: Step, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """LayerNormalization over the axes from ``axis`` on (population variance, as ONNX defines it)."""
    axis = int(step.attrs.get("axis", -1))
    dims = tuple(range(axis % x.dim(), x.dim()))
    centred = x - x.mean(dim=dims, keepdim=True)
    y = centred / torch.sqrt((centred * centred).mean(dim=dims, keepdim=True) + float(step.attrs.get("epsilon", 1e-5)))
    y = y * scale
    return y if bias is None else y + bias


# ---- linear algebra ----------------------------------------------------------------------------------

def gemm(step: Step, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """Gemm: ``alpha * A' @ B' + beta * C``."""
    alpha, beta = float(step.attrs.get("alpha", 1.0)), float(step.attrs.get("beta", 1.0))
    if step.attrs.get("transB", 0) and not step.attrs.get("transA", 0) and alpha == beta == 1.0 \
            and (c is None or c.dim() == 1):
        # How torch exports nn.Linear: F.linear runs the same kernel, so logits and gradients match bit for bit.
        return F.linear(a, b, c)
    a = a.t() if step.attrs.get("transA", 0) else a
    b = b.t() if step.attrs.get("transB", 0) else b
    y = a @ b if alpha == 1.0 else alpha * (a @ b)
    return y if c is None else y + (c if beta == 1.0 else beta * c)


def matmul(step: Step, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MatMul with numpy broadcasting over leading (batch) dims."""
    return torch.matmul(a, b)


# ---- activations ---------------------------------------------------------------------------------------

class _StraightThroughSign(torch.autograd.Function):
    """sign(x) forward, the identity backward: sign's true gradient is zero almost everywhere."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        """sign(x)."""
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        """The incoming gradient, unchanged."""
        return grad


def sign(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Sign, with a straight-through (identity) gradient so attacks see a signal."""
    return _StraightThroughSign.apply(x) if x.requires_grad else torch.sign(x)


def leaky_relu(step: Step, x: torch.Tensor) -> torch.Tensor:
    """LeakyRelu with slope ``alpha`` (default 0.01)."""
    return F.leaky_relu(x, float(step.attrs.get("alpha", 0.01)))


def gelu(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Gelu (opset 20): exact erf form, or the tanh approximation."""
    return F.gelu(x, approximate="tanh" if step.attrs.get("approximate", "none") == "tanh" else "none")


def softmax(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Softmax; before opset 13 over all dims from ``axis`` on (the input coerced to 2-d), since then along it."""
    if step.opset >= 13:
        return torch.softmax(x, dim=int(step.attrs.get("axis", -1)))
    axis = int(step.attrs.get("axis", 1)) % x.dim()
    return torch.softmax(x.flatten(axis), dim=-1).reshape(x.shape)


def clip(step: Step, x: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
    """Clip; bounds from attributes before opset 11, from (optional) inputs since."""
    lo_v = float(lo) if lo is not None else step.attrs.get("min")
    hi_v = float(hi) if hi is not None else step.attrs.get("max")
    return torch.clamp(x, lo_v, hi_v)


def reduce(step: Step, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """ReduceMean / ReduceSum over ``axes`` (attribute or input), all axes when none are given."""
    picked = attr_or_input(step, "axes", axes)
    if not picked:
        if step.attrs.get("noop_with_empty_axes", 0):
            return x
        picked = list(range(x.dim()))
    keep = bool(step.attrs.get("keepdims", 1))
    fn = torch.mean if step.op == "ReduceMean" else torch.sum
    return fn(x, dim=tuple(int(a) for a in picked), keepdim=keep)


def power(step: Step, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Pow; an exponent of 2 runs as ``x * x`` (what exporters of LayerNorm mean, and exact for negative x)."""
    if p.numel() == 1 and float(p) == 2.0:
        return x * x
    return torch.pow(x, p.to(x.dtype) if p.is_floating_point() else p)

