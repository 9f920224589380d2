"""The one ONNX reader: file -> checked ``onnx`` model -> :class:`OnnxGraph`, a differentiable torch module.

Attacks run the module like any torch model (any device, any batch size); the verifier walks the
same module's :attr:`OnnxGraph.steps` (``verify.torch_import``, ``verify.graph_ibp``). Constants are
buffers (they follow ``.to(device)`` and ``.double()``), so one graph serves float32 attacks and
float64 verification.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from rbl_core.onnx.errors import ModelSourceError, first_line
from rbl_core.onnx.fold import BatchTemplate, Plan, materialise, plan_graph
from rbl_core.onnx.step import Step
from rbl_core.onnx.table import OPS

# onnx is imported where it is used: the harness imports this module on every run (about a second of
# import time), and most runs never read an ONNX file.


def read_onnx(path: str | Path) -> Any:
    """``onnx.load`` + ``onnx.checker.check_model`` of ``path``; any failure is a one-line ModelSourceError."""
    import onnx

    p = Path(path)
    if not p.is_file():
        where = "" if p.is_absolute() else f" (resolved: {p.resolve()})"
        raise ModelSourceError(f"ONNX file {p} does not exist{where}")
    try:
        model = onnx.load(str(p))
    except Exception as err:  # protobuf raises DecodeError, RuntimeWarning-turned-errors, OSError... on bad bytes
        raise ModelSourceError(f"ONNX file {p} cannot be read ({first_line(err)}); is it an ONNX model?") from err
    try:
        # The path, not the loaded proto: the checker then also handles models over 2 GB and external data.
        onnx.checker.check_model(str(p))
    except Exception as err:  # ValidationError, and ValueError/OSError for malformed files
        raise ModelSourceError(f"ONNX file {p} fails onnx.checker.check_model ({first_line(err)})") from err
    return model


class OnnxGraph(nn.Module):
    """An ONNX graph as a list of steps run with torch functions: differentiable, batch size free, eval-only."""

    def __init__(self, model: Any, source: str = "<onnx>", sample_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.source = source
        plan = plan_graph(model, source, sample_shape)
        graph = model.graph
        inputs = [i for i in graph.input if i.name in (plan.input_name,)]
        # Static sizes of the declared input (None where symbolic), for the caller's checks against the data.
        self.input_shape: tuple[int | None, ...] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim)
        self.op_types: tuple[str, ...] = tuple(n.op_type for n in graph.node)
        inits = [t for t in graph.initializer]
        # Weights = floating-point initializer elements; integer shape/axes constants are not weights.
        self.num_weights = int(sum(_numel(t) for t in inits if t.data_type in (1, 10, 11, 16)))
        self._set_plan(plan)
        self.eval()

    def _set_plan(self, plan: Plan) -> None:
        self.steps: list[Step] = list(plan.steps)
        self.input_name, self.output_name = plan.input_name, plan.output_name
        self.sample_shape = plan.sample_shape
        self.batch_axes, self.shapes = dict(plan.batch_axes), dict(plan.shapes)
        # Buffers follow .to(device) and state_dict(); ONNX names need not be attribute names, hence the side table.
        self._buffer_of: dict[str, str] = {}
        self._templates: dict[str, BatchTemplate] = {}
        for i, (name, value) in enumerate(plan.constants.items()):
            self.register_buffer(f"c{i}", value.clone())
            self._buffer_of[name] = f"c{i}"
        for i, (name, template) in enumerate(plan.templates.items()):
            self.register_buffer(f"t{i}", template.base.clone())
            self._templates[name] = BatchTemplate(torch.empty(0), template.coef, template.axes)
            self._buffer_of[name] = f"t{i}"

    @property
    def num_nodes(self) -> int:
        """Number of nodes in the graph (Constant nodes included)."""
        return len(self.op_types)

    @property
    def attack_notes(self) -> tuple[str, ...]:
        """What an attack on this graph should record (e.g. a straight-through gradient)."""
        return tuple(sorted({OPS[s.op].attack_note for s in self.steps if OPS[s.op].attack_note}))

    def constants(self, n: int) -> dict[str, torch.Tensor]:
        """Every value the steps read that is not data, at batch size ``n``."""
        env = {}
        for name, buf in self._buffer_of.items():
            value = getattr(self, buf)
            template = self._templates.get(name)
            env[name] = value if template is None else materialise(BatchTemplate(value, template.coef, template.axes), n)
        return env

    def is_constant(self, name: str) -> bool:
        """Whether ``name`` is a value the steps read that does not depend on the input."""
        return name in self._buffer_of

    def run(self, x: torch.Tensor, hook: Callable[[Step, list], tuple] | None = None) -> torch.Tensor:
        """Run the steps on ``x``; ``hook(step, args)`` (default: the op) computes each step's outputs."""
        env: dict[str, Any] = self.constants(int(x.shape[0]))
        env[self.input_name] = x
        for step in self.steps:
            args = [env[n] if n else None for n in step.inputs]
            out = hook(step, args) if hook is not None else OPS[step.op].fn(step, *args)
            for name, value in zip(step.outputs, out if isinstance(out, tuple) else (out,)):
                if name:
                    env[name] = value
        return env[self.output_name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on ``x`` (the graph's single input) and return its single output."""
        return self.run(x)

    def without_final(self, op: str) -> tuple["OnnxGraph", bool]:
        """A copy whose output is the input of a final ``op`` step (e.g. Softmax), and whether one was removed."""
        last = self.steps[-1] if self.steps else None
        if last is None or last.op != op or last.outputs[0] != self.output_name:
            return self, False
        other = copy.deepcopy(self)
        other.steps = other.steps[:-1]
        other.output_name = last.inputs[0]
        return other, True

    def extra_repr(self) -> str:
        """Source file, node count and input shape, shown by ``print(module)``."""
        return f"source={self.source!r}, nodes={self.num_nodes}, input_shape={self.input_shape}"


def _numel(tensor: Any) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


def load_onnx(path: str | Path, sample_shape: tuple[int, ...] | None = None) -> OnnxGraph:
    """Read, check and fold the ONNX file at ``path`` into an eval-mode :class:`OnnxGraph`."""
    return OnnxGraph(read_onnx(path), source=str(path), sample_shape=sample_shape)
