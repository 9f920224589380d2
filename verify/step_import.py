"""The reader's graph (:class:`rbl_core.onnx.OnnxGraph`) -> the dense verification IR, by basis points.

The graph runs on a batch of points ``0, e_1, ..., e_n`` (its batch dimension is free, so the points
*are* the batch); between two activations every step is affine in them, so each tensor is fixed by
its values there (:mod:`verify.layer_cut`). Relu/Sigmoid/Tanh (and LeakyRelu, MaxPool as ReLU layers)
cut the graph, carrying every value a later step reads. Steps that are not affine in the input
(a product of two input-dependent tensors, Softmax, LayerNormalization, ...) are refused by name:
:mod:`verify.graph_ibp` bounds those graphs instead.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from rbl_core.onnx import OPS, OnnxGraph
from rbl_core.onnx.step import Step

from .layer_cut import LayerBuilder, affine_of, basis_points, cut_carrying, max_reduce, pool_windows
from .network import Network, UnsupportedOperationError

_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
# affine in all their inputs together
_JOINT = {"Add", "Sub", "Concat"}
# affine when at most one input depends on the network input (and, for these, it is the first)
_ONE = {"Conv", "ConvTranspose", "BatchNormalization", "Div", "Pad", "Resize", "Upsample", "Reshape", "Expand",
        "Slice", "Gather", "Squeeze", "Unsqueeze", "Split", "ReduceMean", "ReduceSum", "Clip"}
_ONE_ANYWHERE = {"Mul", "MatMul", "Gemm"}
_UNARY = {"Neg", "Flatten", "Transpose", "Identity", "Dropout", "Cast", "AveragePool", "GlobalAveragePool"}
_MAX_POINT_VALUES = 30_000_000   # (points x values) of the widest tensor: beyond it the dense IR does not fit


def _refuse(step: Step, why: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(f"{step.source}: node {step.name!r} ({step.op}): {why}; "
                                     "bound it with verify.graph_ibp instead of the dense IR")


class _Walker:
    """Runs the steps on basis points, cutting layers at activations."""

    def __init__(self, graph: OnnxGraph):
        self.graph = graph
        self.n = int(np.prod(graph.sample_shape))
        self.layers = LayerBuilder(self.n)
        self.read_later: list[set[str]] = []
        later = {graph.output_name}
        for step in reversed(graph.steps):
            self.read_later.insert(0, set(later))
            later |= {i for i in step.inputs if i}
        self.index = 0
        self.env: dict[str, torch.Tensor] = {}

    def _cut(self, act: str, apply: list[np.ndarray], carry: list[np.ndarray]) -> tuple[list, list]:
        live = [k for k in self.read_later[self.index] if k in self.env and not self.graph.is_constant(k)]
        return cut_carrying(self.layers, act, apply, carry, self.env, live, torch.from_numpy)

    def _on_points(self, step: Step, name: str) -> np.ndarray:
        if self.graph.batch_axes.get(name) != (0,):
            raise _refuse(step, f"its input {name!r} does not keep the batch on dim 0")
        return self.env[name].numpy()

    def step(self, step: Step, args: list) -> object:
        data = [bool(i) and not self.graph.is_constant(i) for i in step.inputs]
        if step.op in _ACTS:
            (pts,), _ = self._cut(_ACTS[step.op], [self._on_points(step, step.inputs[0])], [])
            return torch.from_numpy(pts)
        if step.op == "LeakyRelu":
            # leaky(x) = a * x + (1 - a) * relu(x): x is carried through the ReLU layer beside relu(x)
            x = self._on_points(step, step.inputs[0])
            a = float(step.attrs.get("alpha", 0.01))
            (r,), (c,) = self._cut("relu", [x], [x])
            return torch.from_numpy(a * c + (1 - a) * r)
        if step.op == "MaxPool":
            return self._max_pool(step)
        if step.op in _JOINT or step.op in _UNARY:
            return OPS[step.op].fn(step, *args)
        if step.op in _ONE | _ONE_ANYWHERE and sum(data) <= 1 and (step.op in _ONE_ANYWHERE or not any(data[1:])):
            return OPS[step.op].fn(step, *args)
        if step.op in _ONE | _ONE_ANYWHERE:
            raise _refuse(step, "a product or quotient of input-dependent tensors is not affine")
        raise _refuse(step, "not affine, ReLU, Sigmoid or Tanh")

    def _max_pool(self, step: Step) -> torch.Tensor:
        at = step.attrs
        kernel = tuple(int(k) for k in at["kernel_shape"])
        if len(kernel) != 2 or any(at.get("pads", [0])) or at.get("ceil_mode", 0) \
                or any(d != 1 for d in at.get("dilations", [1])) or at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise _refuse(step, "MaxPool with padding, ceil_mode, dilations or a non-2-d kernel")
        stride = tuple(int(s) for s in at.get("strides", [1, 1]))
        windows = pool_windows(self._on_points(step, step.inputs[0]), kernel, stride, "MaxPool")
        return torch.from_numpy(max_reduce(windows, lambda a, c: self._cut("relu", a, c)))

    def run(self) -> Network:
        largest = max(int(np.prod(s[1:])) for s in self.graph.shapes.values())
        if (self.n + 1) * largest > _MAX_POINT_VALUES:
            raise UnsupportedOperationError(
                f"{self.graph.source}: {self.n} inputs x {largest} values in its widest tensor is too large for the "
                "dense verification IR; bound it with verify.graph_ibp")
        pts = torch.from_numpy(basis_points(tuple(self.graph.sample_shape)))

        def hook(step: Step, args: list) -> object:
            # the graph's own env is not ours: mirror the data values so cuts can move them to a new basis
            args = [self.env[n] if n and not self.graph.is_constant(n) else a for n, a in zip(step.inputs, args)]
            out = self.step(step, args)
            for name, value in zip(step.outputs, out if isinstance(out, tuple) else (out,)):
                if name:
                    self.env[name] = value
            self.index += 1
            return out

        self.env[self.graph.input_name] = pts
        with torch.no_grad():
            self.graph.run(pts, hook)
        w, b = affine_of(self.env[self.graph.output_name].numpy())
        return Network(self.layers.weights + [w], self.layers.biases + [b], tuple(self.graph.sample_shape),
                       self.graph.source, {"onnx_input_shape": (1, *self.graph.sample_shape),
                                           "onnx_input_name": self.graph.input_name},
                       nonlinearities=self.layers.nonlinearities)


def graph_to_network(graph: OnnxGraph) -> Network:
    """The dense float64 IR of ``graph`` (affine + ReLU/Sigmoid/Tanh layers), or a named refusal."""
    return _Walker(copy.deepcopy(graph).double()).run()
