"""Outward rounding for bounds computed in float32 (or float64) torch arithmetic.

Every rounding-error allowance here rests on the standard bound for a dot product of
length ``n`` evaluated in floating point in *any* summation order, fused or not:
``|fl(a . b) - a . b| <= gamma(n) * (|a| . |b|)`` with ``gamma(n) = n u / (1 - n u)`` and
``u`` the unit roundoff (Higham, Accuracy and Stability of Numerical Algorithms, 3.1).
Callers bound ``|a| . |b|`` from above with magnitudes they already have and move each
bound outward by the allowance, so the bound of the real-valued network survives rounding.
``gamma`` counts two terms more than the sum has: they cover the rounding of float64 weights
and biases to the working dtype (``|dW| <= u |W|`` adds ``u |W| |x|``, like one more term).
Input boxes and specification rows given in a wider dtype are rounded outward
(:func:`outward_cast`) or corrected (:func:`cast_rows`).
TF32 would break ``u``; :func:`exact_matmul` turns it off while bounds are computed.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

# a safety factor on every allowance: the magnitudes that multiply gamma are themselves rounded
# (a float32 product each, then summed in float64: relative error about u, far below 25%)
SAFETY = 1.25


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u``: half the machine epsilon of ``dtype`` (round to nearest)."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """Relative error bound of an ``n``-term dot product, times :data:`SAFETY`."""
    nu = (n + 2) * unit_roundoff(dtype)
    if nu >= 0.5:
        raise ValueError(f"a {n}-term sum in {dtype} has no useful rounding bound")
    return SAFETY * nu / (1 - nu)


def widen(lo: torch.Tensor, hi: torch.Tensor, err: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """``[lo - err', hi + err']`` with ``err'`` also covering the subtraction's own rounding."""
    u = unit_roundoff(lo.dtype)
    tiny = torch.finfo(lo.dtype).tiny
    return (lo - err - SAFETY * u * lo.abs() - tiny, hi + err + SAFETY * u * hi.abs() + tiny)


def center_radius(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mid, rad`` with ``[lo, hi]`` inside ``[mid - rad, mid + rad]`` despite rounding."""
    mid = (lo + hi) / 2
    rad = (hi - lo) / 2
    return mid, rad + SAFETY * 2 * unit_roundoff(lo.dtype) * (mid.abs() + rad) + torch.finfo(lo.dtype).tiny


def outward_cast(lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The box ``[lo, hi]`` in ``dtype``, containing the original (a cast rounds to nearest: step outward)."""
    lo_c, hi_c = lo.to(dtype), hi.to(dtype)
    if torch.finfo(dtype).eps <= torch.finfo(lo.dtype).eps:
        return lo_c, hi_c
    wide = lo.dtype
    lo_c = torch.where(lo_c.to(wide) > lo, torch.nextafter(lo_c, torch.full_like(lo_c, -torch.inf)), lo_c)
    hi_c = torch.where(hi_c.to(wide) < hi, torch.nextafter(hi_c, torch.full_like(hi_c, torch.inf)), hi_c)
    return lo_c, hi_c


def cast_rows(A: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows ``A`` in ``dtype`` and the float64 cast error ``A - A_cast`` (None when exact)."""
    A_c = A.to(dtype)
    delta = A.to(torch.float64) - A_c.to(torch.float64)
    return A_c, (delta if bool((delta != 0).any()) else None)


@contextlib.contextmanager
def exact_matmul() -> Iterator[None]:
    """Disable TF32 matmuls and convolutions (CUDA) inside the block; restore the flags after."""
    cuda_mm = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = cuda_mm
        torch.backends.cudnn.allow_tf32 = cudnn
