"""Turn an ONNX graph into a step plan: constants and shape arithmetic folded, the batch dimension left free.

The graph is run twice at load time on random probe batches of two sizes (``PROBES``). A node whose
inputs are all known at load (initializers, Constant, and anything computed from them or from a
``Shape``) is folded; the others become steps. A folded value the steps read may depend on the batch
size -- ``Shape(x)[0]`` in a dynamic-batch export, or a class token expanded to the batch -- and the two
probes tell how: shape vectors with entries ``k * N``, or a batch-free tensor expanded along the
batch axes. Both are rebuilt for the actual batch in ``forward``. An exporter that fixed the batch to 1
(``Reshape(x, [1, -1])``) gets 0 ("keep dim 0") in place of the 1, so any batch size runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rbl_core.onnx.errors import ModelSourceError, UnsupportedOnnxOp, first_line
from rbl_core.onnx.step import Step
from rbl_core.onnx.table import HINTS, OPS, SUPPORTED_OPS

PROBES = (2, 3)   # two batch sizes: what differs between them is the batch


@dataclass(frozen=True)
class BatchTemplate:
    """A folded value that depends on the batch size ``N``: ``base + coef * N`` or ``base`` expanded on ``axes``."""

    base: torch.Tensor
    coef: torch.Tensor | None = None   # int shape vectors: entries k * N
    axes: tuple[int, ...] = ()         # tensors: base has size 1 on these axes and is expanded to N


@dataclass
class Plan:
    """What the reader keeps of a graph: the steps, the values they read, and per-tensor batch facts."""

    steps: list[Step]
    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]                     # the input without its batch dim
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    templates: dict[str, BatchTemplate] = field(default_factory=dict)
    batch_axes: dict[str, tuple[int, ...]] = field(default_factory=dict)   # data tensor -> axes that are batch
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)       # data tensor -> shape at batch PROBES[0]


def decode_attributes(node: Any) -> dict[str, Any]:
    """Node attributes as Python values: strings decoded, tensors as torch tensors."""
    from onnx import AttributeProto, helper, numpy_helper

    attrs: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == AttributeProto.TENSOR:
            attrs[a.name] = to_tensor(numpy_helper.to_array(a.t))
            continue
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        attrs[a.name] = value
    return attrs


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """An ONNX array as the reader holds it: floats as float32, integers as int64."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return torch.from_numpy(np.array(array, dtype=np.float32))
    if array.dtype.kind in "iu":
        return torch.from_numpy(np.array(array, dtype=np.int64))
    if array.dtype.kind == "b":
        return torch.from_numpy(np.array(array))
    raise ModelSourceError(f"ONNX tensors of dtype {array.dtype} are not supported")


def _constant(step: Step) -> torch.Tensor:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in step.attrs:
            v = step.attrs[key]
            return v if isinstance(v, torch.Tensor) else to_tensor(np.asarray(v))
    raise step.unsupported(f"only numeric value/value_float(s)/value_int(s) are supported, not {sorted(step.attrs)}")


def _check_attrs(step: Step) -> None:
    """Refuse, at load time, attribute values the op functions do not implement."""
    used = [o for o in step.outputs if o]
    if step.op in ("MaxPool", "BatchNormalization") and len(used) > 1:
        raise step.unsupported(f"{len(used)} outputs (indices / training statistics)")
    if step.op == "BatchNormalization" and step.attrs.get("training_mode", 0):
        raise step.unsupported("training_mode=1; export the model in eval mode")
    if step.op in ("MaxPool", "AveragePool") and len(step.attrs.get("kernel_shape", [])) not in (1, 2, 3):
        raise step.unsupported(f"kernel_shape {step.attrs.get('kernel_shape')}")
    if step.op == "ConvTranspose" and ("output_shape" in step.attrs
                                       or step.attrs.get("auto_pad", "NOTSET") != "NOTSET"):
        raise step.unsupported("output_shape or auto_pad; export with explicit pads")
    if step.op == "Concat" and "axis" not in step.attrs:
        raise step.unsupported("no axis attribute")


def _run(step: Step, args: list[torch.Tensor | None]) -> tuple[torch.Tensor, ...]:
    try:
        out = OPS[step.op].fn(step, *args)
    except UnsupportedOnnxOp:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise ModelSourceError(f"{step.source}: node {step.name!r} ({step.op}) fails on a probe batch "
                               f"({first_line(err)})") from err
    return out if isinstance(out, tuple) else (out,)


def _template(name: str, v1: torch.Tensor, v2: torch.Tensor, user: Step) -> torch.Tensor | BatchTemplate:
    """The load-time value ``name`` as a constant or a batch template, from its values at the two probes."""
    if v1.shape == v2.shape and torch.equal(v1, v2):
        return v1
    (p1, p2) = PROBES
    if v1.dim() == 1 and v1.shape == v2.shape and not v1.is_floating_point():
        coef = (v2 - v1) // (p2 - p1)
        base = v1 - coef * p1
        if torch.equal(base + coef * p2, v2) and bool(((base == 0) | (coef == 0)).all()):
            return BatchTemplate(base, coef=coef)
    if v1.dim() == v2.dim():
        axes = tuple(i for i, (a, b) in enumerate(zip(v1.shape, v2.shape)) if a != b)
        if all(v1.shape[i] == p1 and v2.shape[i] == p2 for i in axes):
            base = v1
            for i in axes:
                base = base.narrow(i, 0, 1)
            if torch.equal(base.expand(v1.shape), v1) and torch.equal(base.expand(v2.shape), v2):
                return BatchTemplate(base.contiguous(), axes=axes)
    raise user.unsupported(f"its input {name!r} depends on the batch size in a way the reader cannot fold")


def plan_graph(model: Any, source: str, sample_shape: tuple[int, ...] | None = None) -> Plan:
    """Fold ``model`` (an ``onnx.ModelProto``) into a :class:`Plan`; ``sample_shape`` fills symbolic input dims."""
    from onnx import numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    consts: dict[str, torch.Tensor] = {t.name: to_tensor(numpy_helper.to_array(t)) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]   # old exports list initializers as inputs
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelSourceError(
            f"ONNX file {source} has {len(inputs)} inputs {[i.name for i in inputs]} and {len(graph.output)} "
            f"outputs {[o.name for o in graph.output]}; the suite needs one input and one output")
    input_name, output_name = inputs[0].name, graph.output[0].name
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2:
        raise ModelSourceError(f"ONNX file {source}: input {input_name!r} has shape {dims}; the reader needs a "
                               "leading batch dim")
    sample = list(dims[1:])
    if any(d is None for d in sample):
        if sample_shape is None or len(sample_shape) != len(sample):
            raise ModelSourceError(f"ONNX file {source}: input {input_name!r} has symbolic sizes "
                                   f"{['?' if d is None else d for d in dims]}; give the model's input size")
        sample = [int(s) if d is None else d for d, s in zip(sample, sample_shape)]
    gen = torch.Generator().manual_seed(0)
    envs: list[dict[str, torch.Tensor]] = []
    for p in PROBES:
        envs.append({**consts, input_name: torch.rand((p, *sample), generator=gen)})
    static = set(consts)
    fixed_batch = dims[0] == 1
    steps: list[Step] = []
    with torch.no_grad():
        for index, node in enumerate(graph.node):
            step = Step(node.op_type, node.name or f"#{index}", tuple(node.input), tuple(node.output),
                        decode_attributes(node), source, opset)
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOnnxOp(f"{source}: node {step.name!r} uses op {node.op_type!r} from domain "
                                        f"{node.domain!r}; only the default ONNX domain is supported")
            if step.op == "Constant":
                for env in envs:
                    env[node.output[0]] = _constant(step)
                static.add(node.output[0])
                continue
            if step.op not in OPS:
                raise UnsupportedOnnxOp(f"{source}: node {step.name!r} uses op {step.op!r}, which the ONNX reader "
                                        f"does not support (supported: {', '.join(SUPPORTED_OPS)})"
                                        f"{HINTS.get(step.op, '')}")
            missing = [i for i in step.inputs if i and i not in envs[0]]
            if missing:
                raise ModelSourceError(f"ONNX file {source}: node {step.name!r} ({step.op}) reads {missing[0]!r} "
                                       "before any node produces it (graph not topologically sorted?)")
            _check_attrs(step)
            spec = OPS[step.op]
            # Shape reads only the (static) shape of its input, so it folds even on data
            if step.op == "Shape" or all(i in static for i in step.inputs if i):
                for env in envs:
                    for name, value in zip(step.outputs, _run(step, [env[i] if i else None for i in step.inputs])):
                        env[name] = value
                static.update(o for o in step.outputs if o)
                continue
            if spec.load_only:
                raise step.unsupported("it runs on the data here; the reader folds it only as shape arithmetic "
                                       "known when the file is loaded")
            for pos in spec.static:
                if pos < len(step.inputs) and step.inputs[pos] and step.inputs[pos] not in static:
                    raise step.unsupported(f"its input {step.inputs[pos]!r} is computed from the data at run time; "
                                           "only shapes known when the file is loaded are supported")
            step = _free_batch(step, envs, fixed_batch)
            for env in envs:
                for name, value in zip(step.outputs, _run(step, [env[i] if i else None for i in step.inputs])):
                    if name:
                        env[name] = value
            steps.append(step)
    if output_name not in envs[0]:
        raise ModelSourceError(f"ONNX file {source}: no node produces the output {output_name!r}")
    if output_name in static:
        raise ModelSourceError(f"ONNX file {source}: the output {output_name!r} does not depend on the input")
    return _finish(steps, envs, static, input_name, output_name, tuple(sample))


def _free_batch(step: Step, envs: list[dict[str, torch.Tensor]], fixed_batch: bool) -> Step:
    """Rewrite a step so it runs at any batch size (the probes run at two sizes, so they would fail otherwise)."""
    if step.op == "Squeeze" and len(step.inputs) < 2 and "axes" not in step.attrs:
        # "every size-1 dim": made explicit at a probe size, so a batch of one keeps its batch dim
        ones = [i for i, s in enumerate(envs[0][step.inputs[0]].shape) if s == 1]
        return Step(step.op, step.name, step.inputs, step.outputs, {**step.attrs, "axes": ones}, step.source,
                    step.opset)
    if step.op != "Reshape" or not fixed_batch or step.attrs.get("allowzero", 0):
        return step
    x, target = step.inputs[0], step.inputs[1]
    first = [env[x].shape[0] if env[x].dim() else None for env in envs]
    values = [env[target] for env in envs]
    if first != list(PROBES) or not torch.equal(values[0], values[1]) or not len(values[0]) \
            or int(values[0][0]) != 1:
        return step
    fixed = values[0].clone()
    fixed[0] = 0   # ONNX Reshape: 0 copies the input's dim, i.e. the batch
    name = f"{target}::batch_free"
    for env in envs:
        env[name] = fixed
    return Step(step.op, step.name, (x, name, *step.inputs[2:]), step.outputs, step.attrs, step.source, step.opset)


def _finish(steps: list[Step], envs: list[dict[str, torch.Tensor]], static: set[str], input_name: str,
            output_name: str, sample: tuple[int, ...]) -> Plan:
    plan = Plan(steps, input_name, output_name, sample)
    data = {input_name} | {o for s in steps for o in s.outputs if o}
    for name in data:
        a, b = envs[0][name].shape, envs[1][name].shape
        plan.batch_axes[name] = tuple(i for i, (p, q) in enumerate(zip(a, b)) if p != q)
        plan.shapes[name] = tuple(a)
    for step in steps:
        for name in step.inputs:
            if not name or name in data or name in plan.constants or name in plan.templates:
                continue
            value = _template(name, envs[0][name], envs[1][name], step)
            if isinstance(value, BatchTemplate):
                plan.templates[name] = value
            else:
                plan.constants[name] = value
    return plan


def materialise(template: BatchTemplate, n: int) -> torch.Tensor:
    """The value of ``template`` at batch size ``n``."""
    if template.coef is not None:
        return template.base + template.coef * n
    shape = list(template.base.shape)
    for axis in template.axes:
        shape[axis] = n
    return template.base.expand(shape)

