"""Convert a ``torch.nn.Module`` (Linear/Conv2d/ReLU/Flatten/BatchNorm/normalisation) to the IR.

The module is traced with ``torch.fx``; each traced node is run on a batch of basis *points*
(``0, e_1, ..., e_n`` of the last ReLU's output) in float64, so any chain of affine ops between
two ReLUs becomes one dense layer (BatchNorm in eval mode and input normalisation fold in).
Only ops in the allow-lists below are executed; anything else is rejected by name, because an
unknown op could be non-linear and the IR would then be unsound. The result is checked
against the module on random inputs.
"""
from __future__ import annotations

import copy
import operator

import numpy as np
import torch
from torch import fx, nn

from .network import Network, UnsupportedOperationError

_AFFINE_MODULES = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.Flatten, nn.Identity, nn.Dropout, nn.BatchNorm1d,
                   nn.BatchNorm2d, nn.AvgPool2d, nn.Unflatten)
_RELU_FUNCS = {torch.relu, torch.nn.functional.relu}
_AFFINE_FUNCS = {torch.flatten, operator.getitem, getattr, torch.nn.functional.linear, torch.nn.functional.conv2d,
                 torch.reshape}
_SHAPE_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "unsqueeze", "squeeze", "permute"}
_ARITH = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub,
          torch.mul, torch.div}


class _PointInterpreter(fx.Interpreter):
    """Runs the traced graph on basis points; ReLUs cut the graph into affine layers."""

    def __init__(self, gm: fx.GraphModule, n_in: int):
        super().__init__(gm)
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.n_base = n_in
        self.sym: set[int] = set()  # ids of tensors that depend on the input

    def _mark(self, out, args) -> object:
        if any(isinstance(a, torch.Tensor) and id(a) in self.sym for a in _flat(args)):
            if isinstance(out, torch.Tensor):
                self.sym.add(id(out))
        return out

    def _relu(self, x: torch.Tensor) -> torch.Tensor:
        if id(x) not in self.sym:
            return torch.relu(x)
        flat = x.reshape(x.shape[0], -1).detach().numpy()
        b = flat[0]
        self.weights.append((flat[1:] - b).T.copy())
        self.biases.append(b.copy())
        n = flat.shape[1]
        pts = torch.cat([torch.zeros(1, n, dtype=x.dtype), torch.eye(n, dtype=x.dtype)]).reshape((n + 1,) + x.shape[1:])
        self.n_base = n
        self.sym.add(id(pts))
        return pts

    def placeholder(self, target, args, kwargs):
        out = super().placeholder(target, args, kwargs)
        self.sym.add(id(out))
        return out

    def call_module(self, target, args, kwargs):
        mod = self.fetch_attr(target)
        if isinstance(mod, nn.ReLU):
            return self._relu(args[0])
        if not isinstance(mod, _AFFINE_MODULES):
            raise UnsupportedOperationError(
                f"torch module '{target}' of type {type(mod).__name__} is not supported (not a known affine or ReLU op)")
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and mod.training:
            raise UnsupportedOperationError(f"BatchNorm '{target}' is in training mode; call model.eval() first")
        return self._mark(super().call_module(target, args, kwargs), args)

    def call_function(self, target, args, kwargs):
        if target in _RELU_FUNCS:
            return self._relu(args[0])
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
        if target == "relu":
            return self._relu(args[0])
        if target not in _SHAPE_METHODS and target not in ("add", "sub", "mul", "div"):
            raise UnsupportedOperationError(f"torch method '.{target}()' is not supported")
        if target == "size" and args and id(args[0]) in self.sym:
            # callers reshape with x.size(0); the point batch stands in for the batch axis
            pass
        return self._mark(super().call_method(target, args, kwargs), args)


def _check_graph(gm: fx.GraphModule) -> None:
    """Reject unknown ops before running anything (and with a short message naming the op)."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if not isinstance(mod, _AFFINE_MODULES + (nn.ReLU,)):
                raise UnsupportedOperationError(f"torch module '{node.target}' of type {type(mod).__name__} is not "
                                                "supported (not a known affine or ReLU op)")
        elif node.op == "call_function":
            if node.target not in _AFFINE_FUNCS | _ARITH | _RELU_FUNCS:
                raise UnsupportedOperationError(
                    f"torch function '{getattr(node.target, '__name__', node.target)}' is not supported")
        elif node.op == "call_method":
            if node.target not in _SHAPE_METHODS | {"add", "sub", "mul", "div", "relu"}:
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
    flat = out.reshape(out.shape[0], -1).numpy()
    interp.weights.append((flat[1:] - flat[0]).T.copy())
    interp.biases.append(flat[0].copy())
    net = Network(interp.weights, interp.biases, tuple(input_shape), name or type(model).__name__)
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
