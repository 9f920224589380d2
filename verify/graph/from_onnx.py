"""The ONNX reader's graph (:class:`rbl_core.onnx.OnnxGraph`) -> the graph IR, step by step.

The reader's steps are run once on a random sample batch; each step whose inputs depend on the network
input becomes graph nodes through the same builder the torch.fx front end uses (constants folded, BatchNorm
as an affine node, average pooling as a depthwise convolution), and every other op is refused by name, so
a bound is never computed through an op it does not encode.
"""
from __future__ import annotations

import copy

import torch

from rbl_core.onnx import OPS, OnnxGraph
from rbl_core.onnx.step import Step, ints

from .ir import Graph, Node
from .trace import UnsupportedGraphOpError, GraphBuilder, Sym

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
_PASS = {"Identity", "Dropout"}
_RESHAPE = {"Flatten", "Reshape"}


def _refuse(step: Step, why: str = "is not supported by the graph bounds") -> UnsupportedGraphOpError:
    return UnsupportedGraphOpError(f"ONNX op {step.op} (node {step.name!r} of {step.source})", why)


def _padding(step: Step) -> tuple[int, int]:
    """Symmetric 2-d padding of a Conv or AveragePool step (auto_pad resolved), else a refusal."""
    auto = step.attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return 0, 0
    if auto != "NOTSET":
        raise _refuse(step, f"with auto_pad={auto}")
    pads = ints(step.attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise _refuse(step, f"with asymmetric or non-2-d pads {pads}")
    return pads[0], pads[1]


class _OnnxBuilder(GraphBuilder):
    """Maps each reader step to graph nodes while the reader runs the sample batch."""

    def __init__(self, graph: OnnxGraph, sample: torch.Tensor):
        super().__init__(None, sample)
        self.graph = graph
        self.sym: dict[str, Sym] = {graph.input_name: Sym(0, sample)}

    def hook(self, step: Step, args: list) -> object:
        """The step's concrete outputs (so the reader runs on), recording nodes for input-dependent ones."""
        with torch.no_grad():
            out = OPS[step.op].fn(step, *args)
        data = [self.sym.get(name) if name else None for name in step.inputs]
        if any(d is not None for d in data):
            if len([o for o in step.outputs if o]) != 1:
                raise _refuse(step, "with several outputs")
            self.sym[step.outputs[0]] = self.node(step, data, args, out)
        return out

    def node(self, step: Step, data: list, args: list, out: torch.Tensor) -> Sym:
        """The graph node(s) of one input-dependent step."""
        x, name = data[0], step.name
        if step.op in _BINARY:
            a, b = (d if d is not None else v for d, v in zip(data, args))
            return self.binary(_BINARY[step.op], a, b, name)
        if x is None or any(d is not None for d in data[1:]):
            raise _refuse(step, "with an input-dependent weight or second operand")
        if step.op in _PASS:
            return x
        if step.op == "Relu":
            return self.add("relu", [x], out, name)
        if step.op == "Neg":
            one = torch.ones(out.shape[1:], dtype=out.dtype)
            return self.add("affine", [x], out, name, scale=-one, shift=torch.zeros_like(one))
        if step.op in _RESHAPE:
            return self.reshape(x, out, name)
        if step.op == "Conv":
            return self.onnx_conv(step, x, args, out)
        if step.op in ("Gemm", "MatMul"):
            return self.onnx_linear(step, x, args, out)
        if step.op == "BatchNormalization":
            scale, bias, mean, var = args[1:5]
            inv = torch.rsqrt(var + float(step.attrs.get("epsilon", 1e-5)))
            view = (-1,) + (1,) * (x.sample.dim() - 2)
            return self.add("affine", [x], out, name, scale=self.constant_of((scale * inv).reshape(view), x, name),
                            shift=self.constant_of((bias - mean * scale * inv).reshape(view), x, name))
        if step.op == "AveragePool":
            if step.attrs.get("ceil_mode", 0) or (any(_padding(step)) and not step.attrs.get("count_include_pad", 0)):
                raise _refuse(step, "with ceil_mode or padding not counted in the average")
            kernel = tuple(ints(step.attrs["kernel_shape"]))
            return self.avg_pool(x, out, name, kernel, tuple(ints(step.attrs.get("strides", kernel))), _padding(step))
        if step.op == "GlobalAveragePool":
            return self.adaptive_pool(x, out, name, (1, 1))
        raise _refuse(step)

    def onnx_conv(self, step: Step, x: Sym, args: list, out: torch.Tensor) -> Sym:
        """A 2-d Conv step as a conv2d node."""
        weight, bias = args[1], args[2] if len(args) > 2 else None
        if weight.dim() != 4:
            raise _refuse(step, f"with a {weight.dim() - 2}-d kernel")
        return self.conv(x, out, step.name, weight, bias, tuple(ints(step.attrs.get("strides", [1, 1]))),
                         _padding(step), tuple(ints(step.attrs.get("dilations", [1, 1]))),
                         int(step.attrs.get("group", 1)))

    def onnx_linear(self, step: Step, x: Sym, args: list, out: torch.Tensor) -> Sym:
        """Gemm (x first, not transposed) or MatMul of a (N, n) input by a constant matrix, as a linear node."""
        w = args[1]
        if x.sample.dim() != 2 or w.dim() != 2 or step.attrs.get("transA", 0):
            raise _refuse(step, "other than (N, n) input times a constant matrix")
        weight = w if step.attrs.get("transB", 0) else w.T
        bias = torch.zeros(weight.shape[0], dtype=w.dtype)
        if step.op == "Gemm":
            weight = weight * float(step.attrs.get("alpha", 1.0))
            if len(args) > 2 and args[2] is not None:
                bias = torch.broadcast_to(args[2] * float(step.attrs.get("beta", 1.0)), (weight.shape[0],)).clone()
        return self.add("linear", [x], out, step.name, weight=weight.clone(), bias=bias)


def from_onnx_graph(graph: OnnxGraph, seed: int = 0) -> Graph:
    """The graph IR of the reader's ``graph`` (float32 params), or :class:`UnsupportedGraphOpError` naming the op."""
    reader = copy.deepcopy(graph).float().eval()
    sample = torch.rand((2, *reader.sample_shape), generator=torch.Generator().manual_seed(seed))
    builder = _OnnxBuilder(reader, sample)
    with torch.no_grad():
        reader.run(sample, builder.hook)
    final = builder.sym.get(reader.output_name)
    if final is None:
        raise UnsupportedGraphOpError(f"{reader.source}: the output", "does not depend on the input")
    nodes = builder.nodes
    if final.index != len(nodes) - 1:   # the output must be the last node
        one = torch.ones(nodes[final.index].shape)
        nodes.append(Node("affine", (final.index,), nodes[final.index].shape,
                          {"scale": one, "shift": torch.zeros_like(one)}, "output"))
    return Graph(nodes, reader.source)
