"""The graph bounds' API, after auto_LiRPA's few nouns: a bounded module, an input box, one ``compute_bounds``.

>>> bg = BoundedGraph(model, (1, 28, 28))                  # traced once, float32 on the model's device
>>> box = InputBox.linf(x, eps=0.1, clip=(0.0, 1.0))      # B boxes at once
>>> b = bg.compute_bounds(box, C, method="alpha-crown")   # b.lower, b.upper: (B, m) bounds of C f(x)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rbl_core.device import HOST
from rbl_core.onnx import OnnxGraph

from .alpha import alpha_crown
from .crown import BoundState, concretize, crown_rows, one_step_rows, to_lower
from .ir import Graph
from .propagate import sweep
from .rounding import cast_rows, exact_matmul, outward_cast
from .from_onnx import from_onnx_graph
from .trace import from_module

METHODS = ("ibp", "crown", "alpha-crown")
# rows per back-substitution: on a CPU small chunks stay in cache (CIFAR ResNet, one thread: 64 rows
# 20 s/box and 110 MiB, 1,024 rows 50 s and 893 MiB); a GPU wants large batches
CHUNK = {"cpu": 64, "cuda": 1024}


@dataclass
class InputBox:
    """The perturbation: a batch of input boxes ``lo <= x <= hi``, each (B, *input_shape)."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __post_init__(self) -> None:
        if self.lo.shape != self.hi.shape:
            raise ValueError(f"box bounds have shapes {tuple(self.lo.shape)} and {tuple(self.hi.shape)}")
        if bool((self.lo > self.hi).any()):
            raise ValueError("empty input box: a lower bound exceeds its upper bound")

    @classmethod
    def linf(cls, x: torch.Tensor, eps: float, clip: tuple[float, float] | None = None) -> "InputBox":
        """The L-infinity balls of radius ``eps`` around the batch ``x``, clipped to ``clip``."""
        lo, hi = x - eps, x + eps
        if clip is not None:
            lo, hi = lo.clamp(*clip), hi.clamp(*clip)
        return cls(lo, hi)

    def sample(self, n: int, generator: torch.Generator | None = None, corners: bool = True) -> torch.Tensor:
        """``n`` points per box (B, n, *shape): uniform, half of them box corners when ``corners``."""
        u = torch.rand((self.lo.shape[0], n) + tuple(self.lo.shape[1:]), generator=generator).to(self.lo)
        if corners:
            u[:, : n // 2] = (u[:, : n // 2] > 0.5).to(u.dtype)
        return self.lo.unsqueeze(1) + u * (self.hi - self.lo).unsqueeze(1)


@dataclass
class GraphBounds:
    """Bounds of the rows of ``C f(x)`` per box: ``lower``/``upper`` (B, m); ``state``: every node's interval."""

    lower: torch.Tensor
    upper: torch.Tensor | None
    state: BoundState


class BoundedGraph:
    """A model's graph IR on one device and dtype, ready for bounds (auto_LiRPA's BoundedModule)."""

    def __init__(self, model: nn.Module | Graph, input_shape: tuple[int, ...] | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        if isinstance(model, Graph):
            graph = model
        elif isinstance(model, OnnxGraph):   # fx cannot trace the reader's step loop; its steps are read directly
            graph = from_onnx_graph(model)
        else:
            if input_shape is None:
                raise ValueError("input_shape is needed to trace a module")
            graph = from_module(model, tuple(input_shape))
            p = next(model.parameters(), None)
            device = device if device is not None else (p.device if p is not None else None)
        if device is None:
            p = next((v for n in graph.nodes for v in n.params.values() if isinstance(v, torch.Tensor)), None)
            device = p.device if p is not None else HOST
        self.graph = graph.to(dtype, device)
        self.dtype, self.device = dtype, torch.device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concrete forward pass in the graph's dtype."""
        return self.graph.forward(x.to(self.device, self.dtype))

    def compute_bounds(self, box: InputBox, C: torch.Tensor | None = None, method: str = "crown",
                       intermediate: str = "crown", bound_upper: bool = True, chunk: int | None = None,
                       iters: int = 20, lr: float = 0.1, intermediate_alpha: bool = True,
                       tighten: str = "unstable", stop_above: float | torch.Tensor | None = None) -> GraphBounds:
        """Sound lower (and upper) bounds of each row of ``C f(x)`` over each box.

        ``C``: (m, n_out) or (B, m, n_out) on the flattened output; None: the outputs themselves.
        ``method``: "ibp", "crown" or "alpha-crown" (``iters`` projected Adam steps at ``lr``);
        ``intermediate``: how ReLU inputs are bounded ("crown" or the cheaper "ibp");
        ``chunk``: rows per back-substitution (memory; default :data:`CHUNK` for the device);
        ``intermediate_alpha``: optimise the
        slopes of intermediate bounds too (alpha-CROWN only); ``tighten``: which neurons of a
        ReLU input CROWN bounds, "unstable" (after IBP) or "all" (tighter later intervals, slower);
        ``stop_above``: alpha-CROWN stops once every lower bound exceeds it (a proof needs no more).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        chunk = chunk or CHUNK.get(self.device.type, CHUNK["cuda"])
        lo, hi = outward_cast(box.lo.to(self.device), box.hi.to(self.device), self.dtype)
        if tuple(lo.shape[1:]) != self.graph.input_shape:
            raise ValueError(f"box has shape {tuple(lo.shape[1:])}, the graph takes {self.graph.input_shape}")
        B = lo.shape[0]
        out_shape = self.graph.output_shape
        n_out = 1
        for s in out_shape:
            n_out *= s
        C = torch.eye(n_out, dtype=self.dtype) if C is None else C
        C = C.to(self.device)
        C = C.expand(B, -1, -1) if C.dim() == 2 else C
        m = C.shape[1]
        A, dA = cast_rows(torch.cat([C, -C], 1) if bound_upper else C, self.dtype)
        A = A.reshape((B, A.shape[1]) + tuple(out_shape))
        out = len(self.graph.nodes) - 1
        with exact_matmul():
            with torch.no_grad():
                index: dict[int, torch.Tensor] = {}
                st = sweep(self.graph, lo, hi, "ibp" if method == "ibp" else intermediate, chunk, index=index,
                           tighten=tighten)
                low = _interval_rows(st, out, A)
                step = one_step_rows(st, out, A)
                low = low if step is None else torch.maximum(low, step)
                if method != "ibp":
                    low = torch.maximum(low, _chunked(lambda rows: crown_rows(st, out, A[:, rows]), A.shape[1], chunk))
            if method == "alpha-crown":
                with torch.enable_grad():
                    low, st = alpha_crown(self.graph, lo, hi, A, st, index, low, iters, lr, chunk,
                                          intermediate_alpha, stop_above)
        if dA is not None:  # rows rounded to the dtype: C y = C_cast y + (C - C_cast) y, the last bounded by |y|
            fix = (dA.abs() @ st.xmax(out).flatten(1).to(torch.float64).unsqueeze(-1)).squeeze(-1)
            low = to_lower(low.to(torch.float64) - fix, self.dtype)
        return GraphBounds(low[:, :m], -low[:, m:] if bound_upper else None, st)


def _interval_rows(st: BoundState, out: int, A: torch.Tensor) -> torch.Tensor:
    """Lower bounds of the rows on the output node's interval (IBP)."""
    zero = torch.zeros(A.shape[:2], dtype=torch.float64, device=A.device)
    return to_lower(concretize(A, zero, zero, st.lower[out], st.upper[out]), A.dtype)


def _chunked(f, n: int, chunk: int) -> torch.Tensor:
    return torch.cat([f(slice(s, s + chunk)) for s in range(0, n, chunk)], 1)
