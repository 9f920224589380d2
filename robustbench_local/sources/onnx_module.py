"""ONNX file -> differentiable torch ``nn.Module``: a small interpreter over the graph's nodes.

The maintained converter (onnx2torch) imports torchvision, which cannot be installed beside this
torch, so the suite interprets the graph itself. :class:`OnnxModule` holds the initializers as
buffers (floating ones as float32, integer ones as int64), turns every node into a step at load
time -- so an unsupported op fails when the file is loaded, not in the middle of an attack -- and in
``forward`` runs the steps in the graph's (checked) topological order with torch functions. Because
every step is a torch op, gradients with respect to the input flow as through any torch model, which
is what Foolbox PGD and AutoAttack need.

Shapes that ops take as inputs (Reshape's shape, Squeeze/Unsqueeze axes) must be constants (an
initializer or a Constant node): the interpreter has no Shape/Gather/Cast, which torch's exporter
does not emit for the zoo's nets (``nn.Flatten`` exports as ``Flatten``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustbench_local.sources.errors import ModelSourceError, UnsupportedOnnxOp
from robustbench_local.sources.onnx_ops import (FLOAT_TYPES, HINTS, OPS, STATIC_INPUTS, SUPPORTED_OPS, Step,
                                                first_line)

__all__ = ["SUPPORTED_OPS", "OnnxModule", "read_onnx", "load_onnx", "ModelSourceError", "UnsupportedOnnxOp"]

# ---- reading the file and building the module -------------------------------------------------------
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


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def _to_array(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    array = np.asarray(numpy_helper.to_array(tensor))
    if tensor.data_type in FLOAT_TYPES:   # float16/64 and bfloat16 weights run in float32, like the suite's images
        return array.astype(np.float32)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array


def _constant_value(step_name: str, source: str, attrs: dict[str, Any]) -> np.ndarray:
    """The tensor a Constant node produces."""
    if "value" in attrs:
        return _to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise UnsupportedOnnxOp(f"{source}: node {step_name!r} (Constant): only numeric value/value_float(s)/"
                            f"value_int(s) are supported, not {sorted(attrs)}")


class OnnxModule(nn.Module):
    """An ONNX graph run op by op with torch functions: differentiable, batch size free, eval-only."""

    def __init__(self, model: Any, source: str = "<onnx>") -> None:
        super().__init__()
        graph = model.graph
        self.source = source
        constants: dict[str, np.ndarray] = {t.name: _to_array(t) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in constants]   # old exports list initializers as inputs
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelSourceError(
                f"ONNX file {source} has {len(inputs)} inputs {[i.name for i in inputs]} and {len(graph.output)} "
                f"outputs {[o.name for o in graph.output]}; the suite needs one image input and one logits output")
        self.input_name, self.output_name = inputs[0].name, graph.output[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        # Static sizes of the input (None where symbolic or unknown), for the caller's checks against the data.
        self.input_shape: tuple[int | None, ...] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                                         else None for d in dims)
        self.op_types: tuple[str, ...] = tuple(n.op_type for n in graph.node)
        # Weights = floating-point initializer elements; integer shape/axes constants are not weights.
        self.num_weights = int(sum(a.size for a in constants.values() if a.dtype == np.float32))
        self._steps: list[Step] = []
        static = dict(constants)   # constants plus their Identity aliases, for inputs resolved at load time
        defined = {self.input_name, *constants}
        for index, node in enumerate(graph.node):
            step = self._plan(node, index, constants, static, defined)
            if step is not None:
                self._steps.append(step)
            defined.update(o for o in node.output if o)
        if self.output_name not in defined:
            raise ModelSourceError(f"ONNX file {source}: no node produces the output {self.output_name!r}")
        # Buffers follow .to(device) and state_dict(); the ONNX names are kept in a side table because
        # they need not be valid attribute names.
        self._buffer_of: dict[str, str] = {}
        for i, (name, array) in enumerate(constants.items()):
            if array.dtype.kind in "fiub":
                self.register_buffer(f"c{i}", torch.from_numpy(np.array(array, copy=True)))
                self._buffer_of[name] = f"c{i}"
        self.eval()

    def _plan(self, node: Any, index: int, constants: dict[str, np.ndarray], static: dict[str, np.ndarray],
              defined: set[str]) -> Step | None:
        """Turn ``node`` into a step (None for Constant, which is folded into ``constants``), or raise."""
        name = node.name or f"#{index}"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOnnxOp(f"{self.source}: node {name!r} uses op {node.op_type!r} from domain "
                                    f"{node.domain!r}; only the default ONNX domain is supported")
        attrs = _attributes(node)
        if node.op_type == "Constant":
            constants[node.output[0]] = static[node.output[0]] = _constant_value(name, self.source, attrs)
            return None
        if node.op_type not in OPS:
            hint = HINTS.get(node.op_type, "")
            raise UnsupportedOnnxOp(f"{self.source}: node {name!r} uses op {node.op_type!r}, which the ONNX "
                                    f"interpreter does not support (supported: {', '.join(SUPPORTED_OPS)}){hint}")
        for i in node.input:
            if i and i not in defined:
                raise ModelSourceError(f"ONNX file {self.source}: node {name!r} ({node.op_type}) reads {i!r} before "
                                       "any node produces it (graph not topologically sorted?)")
        inputs = list(node.input)
        for (op, position), key in STATIC_INPUTS.items():
            if node.op_type == op and len(inputs) > position and inputs[position]:
                if inputs[position] not in static:
                    raise UnsupportedOnnxOp(f"{self.source}: node {name!r} ({op}): its {key} input "
                                            f"{inputs[position]!r} is computed at run time; only an initializer "
                                            "or Constant is supported")
                attrs[key] = [int(v) for v in static[inputs[position]].reshape(-1)]
                inputs = inputs[:position]   # each static input is its op's last: the step never sees it
        if node.op_type == "Identity" and node.input[0] in static:
            static[node.output[0]] = static[node.input[0]]   # keeps shapes static through Identity
        step = Step(node.op_type, name, tuple(inputs), tuple(node.output), attrs, OPS[node.op_type], self.source)
        self._check_attrs(step)
        return step

    @staticmethod
    def _check_attrs(step: Step) -> None:
        """Refuse, at load time, attribute values the op functions do not implement."""
        used_outputs = [o for o in step.outputs if o]
        if step.op in ("MaxPool", "BatchNormalization") and len(used_outputs) > 1:
            raise step.unsupported(f"{len(used_outputs)} outputs (indices / training statistics)")
        if step.op == "BatchNormalization" and step.attrs.get("training_mode", 0):
            raise step.unsupported("training_mode=1; export the model in eval mode")
        if step.op == "Dropout" and any(step.attrs.get("training_mode", [0])):
            raise step.unsupported("training_mode=true; export the model in eval mode")
        if step.op in ("MaxPool", "AveragePool") and len(step.attrs.get("kernel_shape", [])) not in (1, 2, 3):
            raise step.unsupported(f"kernel_shape {step.attrs.get('kernel_shape')}")
        if step.op == "AveragePool" and any(d != 1 for d in step.attrs.get("dilations", [])):
            raise step.unsupported(f"dilations {step.attrs['dilations']}")
        if step.op == "Reshape" and "shape" not in step.attrs:
            raise step.unsupported("no shape input")
        if step.op == "Unsqueeze" and "axes" not in step.attrs:
            raise step.unsupported("no axes")
        if step.op == "Concat" and "axis" not in step.attrs:
            raise step.unsupported("no axis attribute")

    @property
    def num_nodes(self) -> int:
        """Number of nodes in the graph (Constant nodes included)."""
        return len(self.op_types)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on ``x`` (the graph's single input) and return its single output."""
        env: dict[str, torch.Tensor] = {name: getattr(self, buf) for name, buf in self._buffer_of.items()}
        env[self.input_name] = x
        for step in self._steps:
            out = step.fn(step, *(env[n] if n else None for n in step.inputs))
            for name, value in zip(step.outputs, out if isinstance(out, tuple) else (out,)):
                if name:
                    env[name] = value
        return env[self.output_name]

    def extra_repr(self) -> str:
        """Source file, node count and input shape, shown by ``print(module)``."""
        return f"source={self.source!r}, nodes={self.num_nodes}, input_shape={self.input_shape}"


def load_onnx(path: str | Path) -> OnnxModule:
    """Read, check and interpret the ONNX file at ``path`` as an eval-mode torch module."""
    return OnnxModule(read_onnx(path), source=str(path))
