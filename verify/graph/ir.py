"""The graph IR: a topologically ordered list of explicit op nodes (op name, input indices, tensor params).

Every node maps a batch ``(B, *in_shape)`` to ``(B, *shape)``. The ops are few on purpose,
so that any front end (torch.fx tracing, an ONNX reader) can target them and every bound
routine handles all of them:

- ``input``: the perturbed input (always node 0, the only one);
- ``linear``: ``x @ weight.T + bias`` on the last dimension;
- ``conv2d``: ``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` (average pooling
  is a depthwise conv2d with constant weights);
- ``relu``;
- ``add``: the sum of two nodes of the same shape (a residual connection);
- ``affine``: elementwise ``x * scale + shift`` with constant tensors broadcastable to the
  shape (BatchNorm in eval mode, normalisation, multiplication/division/addition by constants);
- ``reshape``: to ``shape``, row-major per sample (Flatten, view).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

OPS = ("input", "linear", "conv2d", "relu", "add", "affine", "reshape")


@dataclass
class Node:
    """One op: its inputs (earlier node indices), output shape without batch, and constant params."""

    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    params: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown graph op {self.op!r}; one of {OPS}")

    @property
    def numel(self) -> int:
        """Number of values per sample."""
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class Graph:
    """Nodes in topological order; node 0 is the input, the last node the output."""

    nodes: list[Node]
    name: str = "graph"

    def __post_init__(self) -> None:
        if not self.nodes or self.nodes[0].op != "input":
            raise ValueError("a graph starts with its one input node")
        for i, n in enumerate(self.nodes):
            if (n.op == "input") != (i == 0) or any(not 0 <= j < i for j in n.inputs):
                raise ValueError(f"node {i} ({n.op}) breaks the topological order or the single input")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape."""
        return self.nodes[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample output shape."""
        return self.nodes[-1].shape

    def relu_inputs(self) -> list[int]:
        """Indices of the nodes that feed a ReLU (their bounds set the relaxations)."""
        return sorted({n.inputs[0] for n in self.nodes if n.op == "relu"})

    def ancestors(self, k: int) -> set[int]:
        """Indices of every node node k depends on, k included."""
        seen = {k}
        for i in range(k, -1, -1):
            if i in seen:
                seen.update(self.nodes[i].inputs)
        return seen

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Graph":
        """A copy with every tensor param on ``device`` in ``dtype``."""
        def conv(v: object) -> object:
            """Tensors moved and cast; other params (strides, groups) kept."""
            return v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor) else v
        return Graph([Node(n.op, n.inputs, n.shape, {k: conv(v) for k, v in n.params.items()}, n.name)
                      for n in self.nodes], self.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concrete forward pass of a batch ``(B, *input_shape)``."""
        vals: list[torch.Tensor | None] = [x]
        last_use = {j: i for i, n in enumerate(self.nodes) for j in n.inputs}
        for i, n in enumerate(self.nodes[1:], 1):
            vals.append(apply(n, [vals[j] for j in n.inputs]))
            for j in n.inputs:
                if last_use[j] == i:
                    vals[j] = None  # free activations no later node reads
        return vals[-1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def apply(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """The node's op on concrete input tensors."""
    p = node.params
    x = xs[0]
    if node.op == "linear":
        return F.linear(x, p["weight"], p["bias"])
    if node.op == "conv2d":
        return F.conv2d(x, p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"])
    if node.op == "relu":
        return x.clamp(min=0)
    if node.op == "add":
        return x + xs[1]
    if node.op == "affine":
        return x * p["scale"] + p["shift"]
    if node.op == "reshape":
        return x.reshape((x.shape[0],) + node.shape)
    raise ValueError(f"cannot apply op {node.op!r}")
