"""Convert a ``torch.nn.Module`` (Linear/Conv2d/ReLU/Sigmoid/Tanh/MaxPool/AvgPool/BatchNorm/skips) to the IR.

An ONNX file is read by the suite's one reader (:mod:`rbl_core.onnx`) into a torch module whose steps
:mod:`verify.step_import` walks on the same basis points; any other module is traced with ``torch.fx``.

The module is traced with ``torch.fx``; each traced node is run on a batch of basis *points*
(``0, e_1, ..., e_n`` of the last activation's output) in float64, so any chain of affine ops between
two activations becomes one dense layer (BatchNorm in eval mode and input normalisation fold in).
Skip connections are carried through ReLU layers and MaxPool becomes ReLU layers (:mod:`verify.layer_cut`).
Only ops in the allow-lists below are executed; anything else is rejected by name, because an
unknown op could be non-linear and the IR would then be unsound. The result is checked
against the module on random inputs.
"""
from __future__ import annotations

import copy
import operator

from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from rbl_core.onnx import OnnxGraph, load_onnx

from .layer_cut import LayerBuilder, affine_of, cut_carrying, max_reduce, pool_windows
from .network import Network, UnsupportedOperationError

_AFFINE_MODULES = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.Flatten, nn.Identity, nn.Dropout, nn.BatchNorm1d,
                   nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Unflatten)
_ACT_MODULES = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
_ACT_FUNCS = {torch.relu: "relu", torch.nn.functional.relu: "relu", torch.sigmoid: "sigmoid",
              torch.nn.functional.sigmoid: "sigmoid", torch.tanh: "tanh", torch.nn.functional.tanh: "tanh"}
_ACT_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_TORCH_ACT = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
_MAXPOOL_FUNCS = {torch.nn.functional.max_pool2d, torch.max_pool2d}
_AFFINE_FUNCS = {torch.flatten, operator.getitem, getattr, torch.nn.functional.linear, torch.nn.functional.conv2d,
                 torch.reshape, torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, torch.mean}
_SHAPE_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "unsqueeze", "squeeze", "permute", "mean"}
_ARITH = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub,
          torch.mul, torch.div}


class _PointInterpreter(fx.Interpreter):
    """Runs the traced graph on basis points; activations cut the graph into affine layers."""

    def __init__(self, gm: fx.GraphModule, n_in: int):
        super().__init__(gm)
        self.layers = LayerBuilder(n_in)
        self.sym: set[int] = set()  # ids of tensors that depend on the input
        self.node: fx.Node | None = None

    def run_node(self, n: fx.Node):
        self.node = n
        return super().run_node(n)

    def _mark(self, out, args) -> object:
        if any(isinstance(a, torch.Tensor) and id(a) in self.sym for a in _flat(args)):
            if isinstance(out, torch.Tensor):
                self.sym.add(id(out))
        return out

    def _tensor(self, pts: np.ndarray, dtype) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(pts)).to(dtype)
        self.sym.add(id(t))
        return t

    def _cut(self, act: str, apply: list[np.ndarray], carry: list[np.ndarray], dtype) -> tuple[list, list]:
        """One activation layer; input-dependent values later nodes still read are carried into the new basis."""
        done = set(self.user_to_last_uses.get(self.node, []))
        live = [node for node, v in self.env.items()
                if node not in done and isinstance(v, torch.Tensor) and id(v) in self.sym]
        return cut_carrying(self.layers, act, apply, carry, self.env, live, lambda pts: self._tensor(pts, dtype))

    def _act(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if id(x) not in self.sym:
            return _TORCH_ACT[name](x)
        (pts,), _ = self._cut(name, [x.detach().numpy()], [], x.dtype)
        return self._tensor(pts, x.dtype)

    def _maxpool(self, x: torch.Tensor, kernel, stride, padding, dilation, ceil_mode, return_indices):
        pair = nn.modules.utils._pair
        if id(x) not in self.sym:
            return torch.nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices)
        if any(pair(padding)) or pair(dilation) != (1, 1) or ceil_mode or return_indices:
            raise UnsupportedOperationError("max_pool2d with padding, dilation, ceil_mode or indices is not supported")
        stride = stride if stride not in (None, ()) else kernel
        windows = pool_windows(x.detach().numpy(), pair(kernel), pair(stride), "max_pool2d")
        return self._tensor(max_reduce(windows, lambda a, c: self._cut("relu", a, c, x.dtype)), x.dtype)

    def placeholder(self, target, args, kwargs):
        out = super().placeholder(target, args, kwargs)
        self.sym.add(id(out))
        return out

    def call_module(self, target, args, kwargs):
        mod = self.fetch_attr(target)
        if type(mod) in _ACT_MODULES:
            return self._act(_ACT_MODULES[type(mod)], args[0])
        if isinstance(mod, nn.MaxPool2d):
            return self._maxpool(args[0], mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode,
                                 mod.return_indices)
        if not isinstance(mod, _AFFINE_MODULES):
            raise UnsupportedOperationError(
                f"torch module '{target}' of type {type(mod).__name__} is not supported (not a known affine or ReLU op)")
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and mod.training:
            raise UnsupportedOperationError(f"BatchNorm '{target}' is in training mode; call model.eval() first")
        return self._mark(super().call_module(target, args, kwargs), args)

    def call_function(self, target, args, kwargs):
        if target in _ACT_FUNCS:
            return self._act(_ACT_FUNCS[target], args[0])
        if target in _MAXPOOL_FUNCS:
            names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
            vals = dict(zip(names, ((2,), None, 0, 1, False, False)))
            vals.update(zip(names, args[1:]))
            vals.update(kwargs)
            return self._maxpool(args[0], *(vals[k] for k in names))
        syms = [a for a in _flat(args) if isinstance(a, torch.Tensor) and id(a) in self.sym]
        if target in _ARITH:
            if target in (operator.mul, torch.mul) and len(syms) > 1:
                raise UnsupportedOperationError(f"torch op '{target.__name__}' of two input-dependent tensors is not affine")
            if target in (operator.truediv, torch.div) and len(args) > 1 and isinstance(args[1], torch.Tensor) \
                    and id(args[1]) in self.sym:
                raise UnsupportedOperationError("torch op 'div' by an input-dependent tensor is not affine")
        elif target not in _AFFINE_FUNCS:
            raise UnsupportedOperationError(f"torch function '{getattr(target, '__name__', target)}' is not supported")
        return self._mark(super().call_function(target, args, kwargs), args)

    def call_method(self, target, args, kwargs):
        if target in _ACT_METHODS:
            return self._act(_ACT_METHODS[target], args[0])
        if target not in _SHAPE_METHODS and target not in ("add", "sub", "mul", "div"):
            raise UnsupportedOperationError(f"torch method '.{target}()' is not supported")
        return self._mark(super().call_method(target, args, kwargs), args)


def _check_graph(gm: fx.GraphModule) -> None:
    """Reject unknown ops before running anything (and with a short message naming the op)."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if not isinstance(mod, _AFFINE_MODULES + tuple(_ACT_MODULES) + (nn.MaxPool2d,)):
                raise UnsupportedOperationError(f"torch module '{node.target}' of type {type(mod).__name__} is not "
                                                "supported (not a known affine or ReLU op)")
        elif node.op == "call_function":
            if node.target not in _AFFINE_FUNCS | _ARITH | set(_ACT_FUNCS) | _MAXPOOL_FUNCS:
                raise UnsupportedOperationError(
                    f"torch function '{getattr(node.target, '__name__', node.target)}' is not supported")
        elif node.op == "call_method":
            if node.target not in _SHAPE_METHODS | {"add", "sub", "mul", "div"} | set(_ACT_METHODS):
                raise UnsupportedOperationError(f"torch method '.{node.target}()' is not supported")


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        else:
            yield a


def from_torch(model: nn.Module, input_shape: tuple[int, ...], name: str | None = None,
               check: bool = True) -> Network:
    """Convert ``model`` (taking ``(N, *input_shape)``) into a :class:`Network` in float64.

    The inference-mode function is verified: a copy of the model is put in ``eval()`` mode
    (BatchNorm uses its running statistics); the model itself is left untouched.
    """
    if isinstance(model, OnnxGraph):
        from .step_import import graph_to_network

        return graph_to_network(model)
    model = copy.deepcopy(model).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; name the model in a ValueError
        raise UnsupportedOperationError(f"cannot trace {type(model).__name__} with torch.fx: {exc}") from exc
    _check_graph(gm)
    gm = gm.double().eval()
    n = int(np.prod(input_shape))
    interp = _PointInterpreter(gm, n)
    pts = torch.cat([torch.zeros(1, n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)])
    try:
        with torch.no_grad():
            out = interp.run(pts.reshape((n + 1,) + tuple(input_shape)))
    except UnsupportedOperationError as exc:
        # torch.fx appends its graph dump to the message; keep the line that names the op
        raise UnsupportedOperationError(str(exc).splitlines()[0]) from None
    w, b = affine_of(out.numpy())
    net = Network(interp.layers.weights + [w], interp.layers.biases + [b], tuple(input_shape),
                  name or type(model).__name__, nonlinearities=interp.layers.nonlinearities)
    if check:
        _check_equal(model, net, input_shape)
    return net


def _check_equal(model: nn.Module, net: Network, input_shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((8,) + tuple(input_shape), generator=gen)
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    with torch.no_grad():
        ref = model(x.to(dtype)).double().numpy()
    got = net.forward(x.double().numpy().reshape(8, -1))
    err = np.abs(ref - got).max()
    tol = 1e-3 * max(1.0, np.abs(ref).max())
    if not err <= tol:
        raise UnsupportedOperationError(
            f"converted network differs from the torch module by {err:.3g}; the module has a non-affine op")


def from_onnx(path: str | Path) -> Network:
    """The ONNX file at ``path`` through the suite's one reader, as the dense float64 IR (or a named refusal)."""
    from .step_import import graph_to_network

    return graph_to_network(load_onnx(path))
