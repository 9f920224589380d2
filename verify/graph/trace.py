"""Build a :class:`~verify.graph.ir.Graph` from a ``torch.nn.Module`` by torch.fx tracing.

The traced graph is walked once alongside a concrete sample batch (two random inputs, so
an op that mixes the batch dimension is caught): values that do not depend on the input
are computed as constants, input-dependent ones become graph nodes. Only the ops listed
here are accepted; any other op is refused by name (:class:`UnsupportedGraphOpError`),
because an unknown op could be non-linear and every bound would then be unsound. BatchNorm
is taken in eval mode (its running statistics), as a per-channel affine node.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from rbl_core.device import HOST

from ..network import UnsupportedOperationError
from .ir import Graph, Node


class UnsupportedGraphOpError(UnsupportedOperationError):
    """A module contains an op the graph bounds cannot encode; ``op`` names it."""

    def __init__(self, op: str, why: str = "is not supported by the graph bounds"):
        super().__init__(f"{op} {why}")
        self.op = op


_BINARY = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
           torch.mul: "mul", operator.truediv: "div", torch.div: "div"}
_RELU = {torch.relu, F.relu}
_FLATTEN = {torch.flatten}
_RESHAPE = {torch.reshape}
_CONST_ONLY = {operator.getitem, getattr}
_METHOD_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}
_METHOD_RESHAPE = {"view", "reshape", "flatten"}


class Sym:
    """An input-dependent value: its node index and its value on the sample batch."""

    def __init__(self, index: int, sample: torch.Tensor):
        self.index, self.sample = index, sample


def _fn_name(target) -> str:
    return getattr(target, "__name__", str(target))


class GraphBuilder:
    """Turns the fx nodes into graph nodes, folding constants."""

    def __init__(self, gm: fx.GraphModule, sample: torch.Tensor):
        self.gm = gm
        self.nodes = [Node("input", (), tuple(sample.shape[1:]), name="input")]
        self.first_input = sample

    def add(self, op: str, inputs: list[Sym], out: torch.Tensor, name: str, **params) -> Sym:
        """Append a node computing ``out`` (the sample's value) from ``inputs``."""
        if out.dim() == 0 or out.shape[0] != self.first_input.shape[0]:
            raise UnsupportedGraphOpError(f"'{name}'", "changes the batch dimension")
        self.nodes.append(Node(op, tuple(s.index for s in inputs), tuple(out.shape[1:]), params, name))
        return Sym(len(self.nodes) - 1, out)

    def constant_of(self, c, sym: Sym, name: str) -> torch.Tensor:
        """A per-sample constant tensor of the sym's shape (refuses a batch-dependent constant)."""
        t = torch.as_tensor(c, dtype=sym.sample.dtype, device=sym.sample.device)
        if t.dim() == sym.sample.dim() and t.shape[0] != 1:
            raise UnsupportedGraphOpError(f"'{name}'", "uses a constant with a batch dimension")
        try:
            return torch.broadcast_to(t, sym.sample.shape)[0].clone()
        except RuntimeError:
            raise UnsupportedGraphOpError(f"'{name}'", "broadcasts the input to a larger shape") from None

    def binary(self, kind: str, a, b, name: str) -> object:
        """add/sub/mul/div: of two nodes (add, sub only), of a node and a constant (affine), or of constants."""
        sa, sb = isinstance(a, Sym), isinstance(b, Sym)
        va = a.sample if sa else a
        vb = b.sample if sb else b
        out = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}[kind](va, vb)
        if not (sa or sb):
            return out
        if sa and sb:
            if kind in ("mul", "div"):
                raise UnsupportedGraphOpError(f"'{kind}' ({name})", "of two input-dependent tensors is not affine")
            if a.sample.shape != b.sample.shape:
                raise UnsupportedGraphOpError(f"'{kind}' ({name})", "of input-dependent tensors of different shapes")
            if kind == "sub":
                one = torch.ones(b.sample.shape[1:], dtype=out.dtype, device=out.device)
                b = self.add("affine", [b], -b.sample, f"{name}.neg", scale=-one, shift=torch.zeros_like(one))
            return self.add("add", [a, b], out, name)
        sym, const = (a, b) if sa else (b, a)
        if tuple(out.shape) != tuple(sym.sample.shape):
            raise UnsupportedGraphOpError(f"'{kind}' ({name})", "broadcasts the input to a larger shape")
        c = self.constant_of(const, sym, name)
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        if kind == "add":
            scale, shift = one, c
        elif kind == "sub":
            scale, shift = (one, -c) if sa else (-one, c)
        elif kind == "mul":
            scale, shift = c, zero
        elif sa:
            scale, shift = 1.0 / c, zero
        else:
            raise UnsupportedGraphOpError(f"'div' ({name})", "by an input-dependent tensor is not affine")
        return self.add("affine", [sym], out, name, scale=scale, shift=shift)

    def reshape(self, sym: Sym, out: torch.Tensor, name: str) -> Sym:
        """A per-sample reshape to ``out``'s shape (refused if it mixes the batch)."""
        if out.dim() == 0 or out.shape[0] != sym.sample.shape[0]:
            raise UnsupportedGraphOpError(f"reshape '{name}'", "mixes the batch dimension")
        if tuple(out.shape) == tuple(sym.sample.shape):
            return sym
        return self.add("reshape", [sym], out, name)

    def module(self, target: str, mod: nn.Module, args: list) -> object:
        """A leaf module call: one of the supported module types, else refused by name."""
        x = args[0]
        if not isinstance(x, Sym):
            raise UnsupportedGraphOpError(f"torch module '{target}' ({type(mod).__name__})",
                                          "is applied to a constant; only input-dependent modules are supported")
        with torch.no_grad():
            out = mod(x.sample)
        if isinstance(mod, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(mod, nn.ReLU):
            return self.add("relu", [x], out, target)
        if isinstance(mod, nn.Linear):
            return self.add("linear", [x], out, target, weight=mod.weight.detach().clone(),
                            bias=_bias(mod.bias, mod.out_features, mod.weight))
        if isinstance(mod, nn.Conv2d):
            return self.conv(x, out, target, mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups,
                             mod.padding_mode)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if mod.training or not mod.track_running_stats:
                raise UnsupportedGraphOpError(f"BatchNorm '{target}'", "uses batch statistics; call model.eval()")
            inv = torch.rsqrt(mod.running_var + mod.eps)
            w = mod.weight.detach() if mod.affine else torch.ones_like(inv)
            b = mod.bias.detach() if mod.affine else torch.zeros_like(inv)
            view = (-1,) + (1,) * (x.sample.dim() - 2)
            scale, shift = (w * inv).reshape(view), (b - mod.running_mean * w * inv).reshape(view)
            return self.add("affine", [x], out, target, scale=self.constant_of(scale, x, target),
                            shift=self.constant_of(shift, x, target))
        if isinstance(mod, nn.Flatten):
            return self.reshape(x, out, target)
        if isinstance(mod, nn.AvgPool2d):
            return self.avg_pool(x, out, target, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode,
                                 mod.count_include_pad, mod.divisor_override)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return self.adaptive_pool(x, out, target, mod.output_size)
        raise UnsupportedGraphOpError(f"torch module '{target}' of type {type(mod).__name__}")

    def conv(self, x: Sym, out: torch.Tensor, name: str, weight: torch.Tensor, bias: torch.Tensor | None, stride,
             padding, dilation, groups: int, padding_mode: str = "zeros") -> Sym:
        """A conv2d node (string paddings resolved to symmetric integers)."""
        if padding_mode != "zeros":
            raise UnsupportedGraphOpError(f"conv2d '{name}' with padding_mode={padding_mode!r}")
        pair = nn.modules.utils._pair
        k, dil = tuple(weight.shape[2:]), pair(dilation)
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif all(d * (kk - 1) % 2 == 0 for d, kk in zip(dil, k)):  # "same" with symmetric padding
                padding = tuple(d * (kk - 1) // 2 for d, kk in zip(dil, k))
            else:
                raise UnsupportedGraphOpError(f"conv2d '{name}' with asymmetric 'same' padding")
        return self.add("conv2d", [x], out, name, weight=weight.detach().clone(),
                        bias=_bias(bias, weight.shape[0], weight), stride=pair(stride), padding=pair(padding),
                        dilation=dil, groups=int(groups))

    def avg_pool(self, x: Sym, out: torch.Tensor, name: str, kernel, stride, padding, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> Sym:
        """Average pooling as a depthwise conv2d with constant weights."""
        pair = nn.modules.utils._pair
        kernel, padding = pair(kernel), pair(padding)
        stride = pair(stride) if stride not in (None, ()) else kernel
        if ceil_mode or divisor_override or (any(padding) and not count_include_pad):
            raise UnsupportedGraphOpError(f"avg_pool2d '{name}' with ceil_mode, divisor_override or "
                                          "count_include_pad=False")
        c = x.sample.shape[1]
        w = torch.full((c, 1) + kernel, 1.0 / (kernel[0] * kernel[1]), dtype=out.dtype, device=out.device)
        return self.add("conv2d", [x], out, name, weight=w, bias=torch.zeros(c, dtype=out.dtype, device=out.device),
                        stride=stride, padding=padding, dilation=(1, 1), groups=c)

    def adaptive_pool(self, x: Sym, out: torch.Tensor, name: str, output_size) -> Sym:
        """Adaptive average pooling to a size dividing the input: a plain average pooling."""
        h, w = x.sample.shape[2:]
        oh, ow = out.shape[2:]
        if h % oh or w % ow:
            raise UnsupportedGraphOpError(f"adaptive_avg_pool2d '{name}'", "to a size that does not divide the input")
        return self.avg_pool(x, out, name, (h // oh, w // ow), (h // oh, w // ow), 0)

    def function(self, target, args: list, kwargs: dict, name: str) -> object:
        """A torch function call: supported ones become nodes or constants, others are refused by name."""
        syms = [a for a in _flat(args) + _flat(list(kwargs.values())) if isinstance(a, Sym)]
        if target in _BINARY:
            if kwargs:
                raise UnsupportedGraphOpError(f"'{_fn_name(target)}' with keyword arguments {sorted(kwargs)}")
            return self.binary(_BINARY[target], args[0], args[1], name)
        if not syms:
            if target in _CONST_ONLY or target in _RELU or target in _FLATTEN or target in _RESHAPE:
                return target(*args, **kwargs)
            raise UnsupportedGraphOpError(f"torch function '{_fn_name(target)}'")
        x = args[0]
        if target is getattr and args[1] in ("shape", "dtype", "device"):
            return getattr(x.sample, args[1])
        if target is operator.neg:
            return self.binary("mul", x, -1.0, name)
        if len(syms) != 1 or not isinstance(x, Sym):
            raise UnsupportedGraphOpError(f"torch function '{_fn_name(target)}'", "on these arguments")
        out = target(*[a.sample if isinstance(a, Sym) else a for a in args], **kwargs)
        if target in _RELU:
            return self.add("relu", [x], out, name)
        if target in _FLATTEN or target in _RESHAPE:
            return self.reshape(x, out, name)
        if target is F.linear:
            w, b = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
            return self.add("linear", [x], out, name, weight=w.detach().clone(), bias=_bias(b, w.shape[0], w))
        if target is F.conv2d:
            vals = [_arg(args, kwargs, i, k, d) for i, (k, d) in enumerate(
                [("weight", None), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)], 1)]
            return self.conv(x, out, name, *vals)
        if target is F.avg_pool2d:
            vals = [_arg(args, kwargs, i, k, d) for i, (k, d) in enumerate(
                [("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
                 ("count_include_pad", True), ("divisor_override", None)], 1)]
            return self.avg_pool(x, out, name, *vals)
        if target is F.adaptive_avg_pool2d:
            return self.adaptive_pool(x, out, name, _arg(args, kwargs, 1, "output_size"))
        raise UnsupportedGraphOpError(f"torch function '{_fn_name(target)}'")

    def method(self, target: str, args: list, kwargs: dict, name: str) -> object:
        """A tensor method call: shape queries, reshapes, arithmetic and relu; others are refused by name."""
        x = args[0]
        if not isinstance(x, Sym):
            vals = [a.sample if isinstance(a, Sym) else a for a in args[1:]]
            if any(isinstance(a, Sym) for a in args[1:]) or target not in _METHOD_BINARY | {"size": 0}:
                raise UnsupportedGraphOpError(f"torch method '.{target}()'")
            return getattr(x, target)(*vals, **kwargs)
        if target in _METHOD_BINARY:
            if kwargs:
                raise UnsupportedGraphOpError(f"torch method '.{target}()' with keyword arguments {sorted(kwargs)}")
            return self.binary(_METHOD_BINARY[target], x, args[1], name)
        if target in ("size", "dim"):
            return getattr(x.sample, target)(*args[1:], **kwargs)
        if target == "contiguous":
            return x
        if target == "neg":
            return self.binary("mul", x, -1.0, name)
        if target == "relu":
            return self.add("relu", [x], x.sample.clamp(min=0), name)
        if target in _METHOD_RESHAPE:
            out = getattr(x.sample, target)(*args[1:], **kwargs)
            return self.reshape(x, out, name)
        raise UnsupportedGraphOpError(f"torch method '.{target}()'")


def _arg(args, kwargs, i, key, default=None):
    return args[i] if len(args) > i else kwargs.get(key, default)


def _bias(bias, n: int, like: torch.Tensor) -> torch.Tensor:
    return bias.detach().clone() if bias is not None else torch.zeros(n, dtype=like.dtype, device=like.device)


def _flat(args) -> list:
    out = []
    for a in args:
        out.extend(_flat(a) if isinstance(a, (list, tuple)) else [a])
    return out


def from_module(module: nn.Module, input_shape: tuple[int, ...], name: str | None = None) -> Graph:
    """Trace ``module`` (taking ``(N, *input_shape)``) into a graph of its eval-mode function.

    Parameters keep the module's dtype and device; convert with :meth:`Graph.to`. The module
    itself is left untouched. Raises :class:`UnsupportedGraphOpError` naming the first op the
    graph bounds cannot encode.
    """
    model = copy.deepcopy(module).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; name the model in a user error
        raise UnsupportedGraphOpError(f"{type(module).__name__}", f"cannot be traced by torch.fx: {exc}") from exc
    p = next(model.parameters(), None)
    dtype, device = (p.dtype, p.device) if p is not None else (torch.float32, HOST)
    sample = torch.rand((2,) + tuple(input_shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    b = GraphBuilder(gm, sample)
    env: dict[fx.Node, object] = {}
    result = None
    for n in gm.graph.nodes:
        args = fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a])
        if n.op == "placeholder":
            if any(isinstance(v, Sym) for v in env.values()):
                raise UnsupportedGraphOpError(f"{type(module).__name__}", "takes more than one input")
            env[n] = Sym(0, sample)
        elif n.op == "get_attr":
            env[n] = operator.attrgetter(n.target)(gm)
        elif n.op == "call_module":
            env[n] = b.module(n.target, gm.get_submodule(n.target), list(args))
        elif n.op == "call_function":
            env[n] = b.function(n.target, list(args), dict(kwargs), n.name)
        elif n.op == "call_method":
            env[n] = b.method(n.target, list(args), dict(kwargs), n.name)
        elif n.op == "output":
            result = args[0]
    if not isinstance(result, Sym):
        raise UnsupportedGraphOpError(f"{type(module).__name__}", "must return one input-dependent tensor")
    # nodes no path to the output reads are dropped (keeps the backward pass exact in its work)
    return _prune(Graph(b.nodes, name or type(module).__name__), result.index)


def _prune(g: Graph, out: int) -> Graph:
    live = {out}
    for i in range(out, -1, -1):
        if i in live:
            live.update(g.nodes[i].inputs)
    live.add(0)
    keep = sorted(live)
    new = {old: k for k, old in enumerate(keep)}
    nodes = [Node(g.nodes[i].op, tuple(new[j] for j in g.nodes[i].inputs), g.nodes[i].shape, g.nodes[i].params,
                  g.nodes[i].name) for i in keep]
    return Graph(nodes, g.name)
