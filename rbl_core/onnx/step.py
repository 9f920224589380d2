"""One ONNX node as the reader keeps it: op, tensor names, decoded attributes (the unit every consumer walks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from rbl_core.onnx.errors import UnsupportedOnnxOp


@dataclass(frozen=True)
class Step:
    """A graph node ready to run; ``inputs`` name data tensors or the graph's (folded) constants."""

    op: str
    name: str                    # the node's name, or "#<index>" when the file leaves it empty
    inputs: tuple[str, ...]      # "" marks an omitted optional input
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)   # strings decoded: "NOTSET", never b"NOTSET"
    source: str = "<onnx>"       # the file, for error messages
    opset: int = 17              # the default domain's opset: a few ops changed meaning between versions

    def unsupported(self, why: str) -> UnsupportedOnnxOp:
        """An error naming this node, its op and ``why`` it cannot be run."""
        return UnsupportedOnnxOp(f"{self.source}: node {self.name!r} ({self.op}): {why}")


def ints(t: torch.Tensor | Sequence[int] | None) -> list[int]:
    """A static int tensor (shape, axes, pads) as a Python list."""
    if t is None:
        return []
    if isinstance(t, torch.Tensor):
        return [int(v) for v in t.reshape(-1).tolist()]
    return [int(v) for v in t]


def attr_or_input(step: Step, key: str, value: torch.Tensor | None, default: Any = None) -> Any:
    """An argument that older opsets give as attribute ``key`` and newer ones as an input (``value``)."""
    if value is not None:
        return ints(value)
    return step.attrs.get(key, default)
