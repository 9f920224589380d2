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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_local.sources.errors import ModelSourceError, UnsupportedOnnxOp

__all__ = ["SUPPORTED_OPS", "OnnxModule", "read_onnx", "load_onnx", "ModelSourceError", "UnsupportedOnnxOp"]

# Inputs that ops take as constants, resolved when the file is loaded: (op, input index) -> attribute name.
_STATIC_INPUTS = {("Reshape", 1): "shape", ("Squeeze", 1): "axes", ("Unsqueeze", 1): "axes",
                  ("Dropout", 2): "training_mode"}
_FLOAT_TYPES = {1, 10, 11, 16}   # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else '(no message)'}"


@dataclass(frozen=True)
class _Step:
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

def _explicit_pads(step: _Step, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
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


def _pad_for_torch(step: _Step, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
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


def _conv(step: _Step, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    rank = w.dim() - 2
    if rank not in _CONV:
        raise step.unsupported(f"{rank}-d convolution")
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    x, padding = _pad_for_torch(step, x, w.shape[2:], strides, dilations, 0.0, limit=False)
    return _CONV[rank](x, w, b, stride=strides, padding=padding, dilation=dilations,
                       groups=int(step.attrs.get("group", 1)))


def _max_pool(step: _Step, x: torch.Tensor) -> torch.Tensor:
    kernel = list(step.attrs["kernel_shape"])
    rank = len(kernel)
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    x, padding = _pad_for_torch(step, x, kernel, strides, dilations, float("-inf"), limit=True)
    return _MAX_POOL[rank](x, kernel, strides, padding, dilation=dilations,
                           ceil_mode=bool(step.attrs.get("ceil_mode", 0)))


def _avg_pool(step: _Step, x: torch.Tensor) -> torch.Tensor:
    kernel = list(step.attrs["kernel_shape"])
    rank = len(kernel)
    strides = list(step.attrs.get("strides", [1] * rank))
    include_pad = bool(step.attrs.get("count_include_pad", 0))
    x, padding = _pad_for_torch(step, x, kernel, strides, [1] * rank, 0.0, limit=True, explicit_ok=include_pad)
    return _AVG_POOL[rank](x, kernel, strides, padding, ceil_mode=bool(step.attrs.get("ceil_mode", 0)),
                           count_include_pad=include_pad)


def _global_avg_pool(step: _Step, x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _batch_norm(step: _Step, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor) -> torch.Tensor:
    # Inference form: the stored running statistics, never the batch's own (training_mode is refused at load).
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(step.attrs.get("epsilon", 1e-5)))


def _gemm(step: _Step, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
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


def _flatten(step: _Step, x: torch.Tensor) -> torch.Tensor:
    axis = int(step.attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _reshape(step: _Step, x: torch.Tensor) -> torch.Tensor:
    # ONNX: 0 copies the input's dim at that position (unless allowzero), -1 is inferred (torch does that too).
    keep_zero = bool(step.attrs.get("allowzero", 0))
    shape = [x.shape[i] if d == 0 and not keep_zero else d for i, d in enumerate(step.attrs["shape"])]
    return x.reshape(shape)


def _transpose(step: _Step, x: torch.Tensor) -> torch.Tensor:
    perm = step.attrs.get("perm") or list(range(x.dim() - 1, -1, -1))
    return x.permute(*perm)


def _concat(step: _Step, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat([t for t in xs if t is not None], dim=int(step.attrs["axis"]))


def _squeeze(step: _Step, x: torch.Tensor) -> torch.Tensor:
    axes = step.attrs.get("axes")
    # No axes: every size-1 dim, as ONNX says (a batch of one image loses its batch dim, there as here).
    return x.squeeze() if axes is None else x.squeeze(tuple(int(a) for a in axes))


def _unsqueeze(step: _Step, x: torch.Tensor) -> torch.Tensor:
    rank = x.dim() + len(step.attrs["axes"])   # negative axes count from the end of the output
    for axis in sorted(int(a) + rank if a < 0 else int(a) for a in step.attrs["axes"]):
        x = x.unsqueeze(axis)
    return x


def _dropout(step: _Step, x: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    # Inference: the identity, with an all-true mask for graphs that ask for the second output.
    return x, torch.ones_like(x, dtype=torch.bool)


def _leaky_relu(step: _Step, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, float(step.attrs.get("alpha", 0.01)))


def _elementwise(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda step, *xs: fn(*xs)


_OPS: dict[str, Callable[..., Any]] = {
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
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*_OPS, "Constant"]))
# Shape arithmetic comes from x.view(x.size(0), -1) exported with a dynamic batch; torch.flatten avoids it.
_SHAPE_HINT = "; flatten with nn.Flatten or torch.flatten(x, 1) instead of x.view(x.size(0), -1) and export again"
_HINTS = {"Shape": _SHAPE_HINT, "Gather": _SHAPE_HINT, "Cast": _SHAPE_HINT,
          "Softmax": "; export the logits, without the final softmax"}


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
        raise ModelSourceError(f"ONNX file {p} cannot be read ({_first_line(err)}); is it an ONNX model?") from err
    try:
        # The path, not the loaded proto: the checker then also handles models over 2 GB and external data.
        onnx.checker.check_model(str(p))
    except Exception as err:  # ValidationError, and ValueError/OSError for malformed files
        raise ModelSourceError(f"ONNX file {p} fails onnx.checker.check_model ({_first_line(err)})") from err
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
    if tensor.data_type in _FLOAT_TYPES:   # float16/64 and bfloat16 weights run in float32, like the suite's images
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
        self._steps: list[_Step] = []
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
              defined: set[str]) -> _Step | None:
        """Turn ``node`` into a step (None for Constant, which is folded into ``constants``), or raise."""
        name = node.name or f"#{index}"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOnnxOp(f"{self.source}: node {name!r} uses op {node.op_type!r} from domain "
                                    f"{node.domain!r}; only the default ONNX domain is supported")
        attrs = _attributes(node)
        if node.op_type == "Constant":
            constants[node.output[0]] = static[node.output[0]] = _constant_value(name, self.source, attrs)
            return None
        if node.op_type not in _OPS:
            hint = _HINTS.get(node.op_type, "")
            raise UnsupportedOnnxOp(f"{self.source}: node {name!r} uses op {node.op_type!r}, which the ONNX "
                                    f"interpreter does not support (supported: {', '.join(SUPPORTED_OPS)}){hint}")
        for i in node.input:
            if i and i not in defined:
                raise ModelSourceError(f"ONNX file {self.source}: node {name!r} ({node.op_type}) reads {i!r} before "
                                       "any node produces it (graph not topologically sorted?)")
        inputs = list(node.input)
        for (op, position), key in _STATIC_INPUTS.items():
            if node.op_type == op and len(inputs) > position and inputs[position]:
                if inputs[position] not in static:
                    raise UnsupportedOnnxOp(f"{self.source}: node {name!r} ({op}): its {key} input "
                                            f"{inputs[position]!r} is computed at run time; only an initializer "
                                            "or Constant is supported")
                attrs[key] = [int(v) for v in static[inputs[position]].reshape(-1)]
                inputs = inputs[:position]   # each static input is its op's last: the step never sees it
        if node.op_type == "Identity" and node.input[0] in static:
            static[node.output[0]] = static[node.input[0]]   # keeps shapes static through Identity
        step = _Step(node.op_type, name, tuple(inputs), tuple(node.output), attrs, _OPS[node.op_type], self.source)
        self._check_attrs(step)
        return step

    @staticmethod
    def _check_attrs(step: _Step) -> None:
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
