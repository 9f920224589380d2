"""Read an ONNX file into the verification IR (:class:`verify.network.Network`).

The graph between two activations must be affine. Instead of pattern-matching layers we evaluate
it on a batch of *points* ``0, e_1, ..., e_n`` of the previous activation's output (or the network
input): an affine map ``g`` is fixed by ``g(0)`` and ``g(e_i) - g(0)``. Every tensor that
depends on the input therefore carries a leading point axis; constants do not. Relu, Sigmoid
and Tanh cut the graph into layers (:mod:`verify.layer_cut`), carrying residual branches
through ReLU layers; MaxPool becomes exact ReLU layers. Ops whose result would not be affine
otherwise (Mul of two input-dependent tensors, Softmax, ...) raise
:class:`UnsupportedOperationError` naming the op and node.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .layer_cut import LayerBuilder, affine_of, max_reduce, pool_windows
from .network import Network, UnsupportedOperationError

SUPPORTED_OPS = ("Add", "Sub", "Mul", "Div", "Neg", "MatMul", "Gemm", "Relu", "Sigmoid", "Tanh", "Flatten",
                 "Reshape", "Conv", "BatchNormalization", "Transpose", "Identity", "Dropout", "Constant", "Shape",
                 "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "MaxPool", "AveragePool", "GlobalAveragePool")
_ACT_OPS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


class _Sym:
    """An input-dependent tensor: values at the basis points, shape ``(P, *shape)``."""

    def __init__(self, pts: np.ndarray):
        self.pts = pts

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pts.shape[1:])


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _basis(shape: tuple[int, ...]) -> _Sym:
    n = int(np.prod(shape))
    pts = np.concatenate([np.zeros((1, n)), np.eye(n)], axis=0)
    return _Sym(pts.reshape((n + 1,) + tuple(shape)))


def _affine_from(sym: _Sym, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    if sym.pts.shape[0] != n_in + 1:
        raise AssertionError("point batch size mismatch")
    return affine_of(sym.pts)


def _pool_attrs(op: str, at: dict) -> tuple[tuple[int, int], tuple[int, int], list[int]]:
    kernel = tuple(int(k) for k in at["kernel_shape"])
    if len(kernel) != 2:
        raise UnsupportedOperationError(f"ONNX op '{op}' with a {len(kernel)}-d kernel is not supported")
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or at.get("ceil_mode", 0) \
            or any(d != 1 for d in at.get("dilations", [1, 1])):
        raise UnsupportedOperationError(f"ONNX op '{op}' with auto_pad, ceil_mode or dilations is not supported")
    return kernel, tuple(int(s) for s in at.get("strides", [1, 1])), [int(p) for p in at.get("pads", [0, 0, 0, 0])]


def _avg_pool(x: np.ndarray, at: dict) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    kernel, stride, pads = _pool_attrs("AveragePool", at)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise UnsupportedOperationError("ONNX op 'AveragePool' with asymmetric pads is not supported")
    lead = x.shape[:-3]
    xt = torch.from_numpy(np.ascontiguousarray(x.reshape((-1,) + x.shape[-3:]), dtype=np.float64))
    out = F.avg_pool2d(xt, kernel, stride, (pads[0], pads[1]), count_include_pad=bool(at.get("count_include_pad", 0)))
    return out.numpy().reshape(lead + tuple(out.shape[1:]))


def _resolve_shape(target, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    target = [int(t) for t in np.asarray(target).reshape(-1)]
    out = [in_shape[i] if t == 0 else t for i, t in enumerate(target)]
    if -1 in out:
        known = int(np.prod([t for t in out if t != -1]))
        out[out.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    return tuple(out)


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, at: dict) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if len(w.shape) != 4:
        raise UnsupportedOperationError(f"ONNX op 'Conv' with {len(w.shape) - 2}-d kernel is not supported")
    pads = at.get("pads", [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise UnsupportedOperationError("ONNX op 'Conv' with asymmetric pads is not supported")
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOperationError("ONNX op 'Conv' with auto_pad is not supported")
    lead = x.shape[:-3]
    xt = torch.from_numpy(np.ascontiguousarray(x.reshape((-1,) + x.shape[-3:]), dtype=np.float64))
    out = F.conv2d(xt, torch.from_numpy(w.astype(np.float64)),
                   None if b is None else torch.from_numpy(b.astype(np.float64)),
                   stride=tuple(at.get("strides", [1, 1])), padding=(pads[0], pads[1]),
                   dilation=tuple(at.get("dilations", [1, 1])), groups=int(at.get("group", 1)))
    return out.numpy().reshape(lead + tuple(out.shape[1:]))


_STALE = None  # the value of a tensor left behind in an old basis (no later node reads it)


class _Importer:
    def __init__(self, model, name: str):
        self.model = model
        self.name = name
        self.env: dict[str, object] = {}
        self.layers = LayerBuilder(0)
        self.used_after: list[set[str]] = []
        self.i = 0

    def run(self) -> Network:
        from onnx import numpy_helper

        g = self.model.graph
        inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
        self.env.update(inits)
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise UnsupportedOperationError(f"expected exactly one network input, found {[i.name for i in inputs]}")
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim]
        in_shape = tuple(dims)
        self.env[inputs[0].name] = _basis(in_shape)
        self.layers = LayerBuilder(int(np.prod(in_shape)))
        input_shape = in_shape[1:] if len(in_shape) > 1 and in_shape[0] == 1 else in_shape
        # which tensors later nodes still read: those are carried through an activation layer
        later = {o.name for o in g.output}
        for node in reversed(g.node):
            self.used_after.insert(0, set(later))
            later |= set(node.input)
        for self.i, node in enumerate(g.node):
            self._node(node)
        if len(g.output) != 1:
            raise UnsupportedOperationError(f"expected exactly one network output, found {len(g.output)}")
        out = self.env[g.output[0].name]
        if not isinstance(out, _Sym):
            raise UnsupportedOperationError("the network output does not depend on its input")
        w, b = _affine_from(out, self.layers.n_base)
        return Network(self.layers.weights + [w], self.layers.biases + [b], tuple(input_shape), self.name,
                       {"onnx_input_shape": in_shape, "onnx_input_name": inputs[0].name},
                       nonlinearities=self.layers.nonlinearities)

    def _cut(self, act: str, apply: list[np.ndarray], carry: list[np.ndarray]) -> tuple[list, list]:
        """One activation layer; every input-dependent tensor a later node reads is carried into the new basis."""
        live, seen = [], set()
        for name in sorted(self.used_after[self.i]):
            v = self.env.get(name)
            if isinstance(v, _Sym) and id(v) not in seen:
                seen.add(id(v))
                live.append(name)
        new_apply, new_carry = self.layers.cut(act, apply, carry + [self.env[n].pts for n in live])
        moved = {}
        for name, pts in zip(live, new_carry[len(carry):]):
            moved.setdefault(id(self.env[name]), _Sym(pts))
        for name, v in list(self.env.items()):
            if isinstance(v, _Sym):
                # tensors no later node reads become stale; drop them so nothing mixes two bases
                self.env[name] = moved.get(id(v), _STALE)
        return new_apply, new_carry[:len(carry)]

    def _node(self, node) -> None:
        op = node.op_type
        if op not in SUPPORTED_OPS:
            raise UnsupportedOperationError(
                f"ONNX op '{op}' (node '{node.name or node.output[0]}') is not supported; "
                f"supported ops: {', '.join(SUPPORTED_OPS)}")
        at = _attrs(node)
        ins = [self.env[i] if i else None for i in node.input]
        sym = [isinstance(v, _Sym) for v in ins]

        def val(v):
            return v.pts if isinstance(v, _Sym) else v

        def const_only():
            if any(sym):
                raise UnsupportedOperationError(
                    f"ONNX op '{op}' (node '{node.name}') on an input-dependent tensor is not supported")

        res: object
        if op in ("Identity", "Dropout", "Cast"):
            res = ins[0]
        elif op == "Constant":
            from onnx import numpy_helper

            res = numpy_helper.to_array(at["value"]).astype(np.float64) if "value" in at else np.asarray(
                at.get("value_float", at.get("value_int", 0.0)), dtype=np.float64)
        elif op in _ACT_OPS:
            if not sym[0]:
                res = {"Relu": lambda v: np.maximum(v, 0), "Tanh": np.tanh,
                       "Sigmoid": lambda v: 1 / (1 + np.exp(-v))}[op](ins[0])
            else:
                (pts,), _ = self._cut(_ACT_OPS[op], [ins[0].pts], [])
                res = _Sym(pts)
        elif op == "MaxPool":
            if not sym[0] or (len(node.output) > 1 and node.output[1]):
                raise UnsupportedOperationError(f"ONNX op 'MaxPool' (node '{node.name}') on a constant or with "
                                                "an indices output is not supported")
            kernel, stride, pads = _pool_attrs(op, at)
            if any(pads):
                raise UnsupportedOperationError(f"ONNX op 'MaxPool' (node '{node.name}') with padding is not supported")
            res = _Sym(max_reduce(pool_windows(ins[0].pts, kernel, stride, op), lambda a, c: self._cut("relu", a, c)))
        elif op == "AveragePool":
            res = _Sym(_avg_pool(ins[0].pts, at)) if sym[0] else _avg_pool(ins[0], at)
        elif op == "GlobalAveragePool":
            res = _Sym(ins[0].pts.mean(axis=(-2, -1), keepdims=True)) if sym[0] else \
                ins[0].mean(axis=(-2, -1), keepdims=True)
        elif op in ("Add", "Sub"):
            # evaluated pointwise, u(p) +- v(p) is exactly the affine sum/difference at every point
            r = val(ins[0]) + val(ins[1]) if op == "Add" else val(ins[0]) - val(ins[1])
            res = _Sym(r) if any(sym) else r
        elif op in ("Mul", "Div"):
            if sym[0] and sym[1] or (op == "Div" and sym[1]):
                raise UnsupportedOperationError(
                    f"ONNX op '{op}' (node '{node.name}') of two input-dependent tensors is not affine")
            a, c = val(ins[0]), val(ins[1])
            if any(sym):
                # scaling a point batch scales g(0) and g(e_i) alike, which is exactly affine
                res = _Sym(a * c if op == "Mul" else a / c)
            else:
                res = a * c if op == "Mul" else a / c
        elif op == "Neg":
            res = _Sym(-ins[0].pts) if sym[0] else -ins[0]
        elif op == "MatMul":
            if sym[1]:
                raise UnsupportedOperationError(f"ONNX op 'MatMul' (node '{node.name}') with an input-dependent "
                                                "right operand is not supported")
            r = np.matmul(val(ins[0]), ins[1])
            res = _Sym(r) if sym[0] else r
        elif op == "Gemm":
            if sym[1] or (len(ins) > 2 and ins[2] is not None and sym[2]) or (sym[0] and at.get("transA", 0)):
                raise UnsupportedOperationError(f"ONNX op 'Gemm' (node '{node.name}') with these operands is not supported")
            a = val(ins[0])
            if at.get("transA", 0):
                a = np.swapaxes(a, -1, -2)
            bm = ins[1].T if at.get("transB", 0) else ins[1]
            r = at.get("alpha", 1.0) * np.matmul(a, bm)
            if len(ins) > 2 and ins[2] is not None:
                r = r + at.get("beta", 1.0) * ins[2]
            res = _Sym(r) if sym[0] else r
        elif op == "Flatten":
            axis = at.get("axis", 1)
            shp = ins[0].shape if sym[0] else ins[0].shape
            axis = axis % len(shp) if shp else 0
            new = (int(np.prod(shp[:axis])), int(np.prod(shp[axis:])))
            res = _Sym(ins[0].pts.reshape((ins[0].pts.shape[0],) + new)) if sym[0] else ins[0].reshape(new)
        elif op == "Reshape":
            if sym[1]:
                raise UnsupportedOperationError("ONNX op 'Reshape' with an input-dependent shape is not supported")
            shp = ins[0].shape
            new = _resolve_shape(ins[1], shp)
            res = _Sym(ins[0].pts.reshape((ins[0].pts.shape[0],) + new)) if sym[0] else ins[0].reshape(new)
        elif op == "Transpose":
            perm = list(at.get("perm", list(range(len(ins[0].shape)))[::-1]))
            res = _Sym(np.transpose(ins[0].pts, [0] + [p + 1 for p in perm])) if sym[0] else np.transpose(ins[0], perm)
        elif op == "Conv":
            if sym[1] or (len(ins) > 2 and ins[2] is not None and sym[2]):
                raise UnsupportedOperationError("ONNX op 'Conv' with input-dependent weights is not supported")
            b = ins[2] if len(ins) > 2 else None
            if sym[0]:
                res = _Sym(_conv(ins[0].pts, ins[1], b, at))
            else:
                res = _conv(ins[0], ins[1], b, at)
        elif op == "BatchNormalization":
            if any(sym[1:]):
                raise UnsupportedOperationError("ONNX op 'BatchNormalization' with input-dependent statistics")
            scale, bias, mean, var = ins[1:5]
            k = scale / np.sqrt(var + at.get("epsilon", 1e-5))
            x = val(ins[0])
            nd = x.ndim - (2 if sym[0] else 1)  # axes after the channel axis
            shape = (-1,) + (1,) * nd
            r = (x - mean.reshape(shape)) * k.reshape(shape) + bias.reshape(shape)
            res = _Sym(r) if sym[0] else r
        elif op == "Shape":
            res = np.asarray(ins[0].shape, dtype=np.float64)
        elif op == "Gather":
            const_only()
            res = np.take(ins[0], ins[1].astype(np.int64), axis=at.get("axis", 0))
        elif op == "Unsqueeze":
            const_only()
            axes = at.get("axes", None)
            axes = [int(a) for a in (axes if axes is not None else ins[1])]
            res = ins[0]
            for a in sorted(axes):
                res = np.expand_dims(res, a)
        elif op == "Squeeze":
            if sym[0]:
                axes = at.get("axes", None)
                axes = [int(a) for a in (axes if axes is not None else (ins[1] if len(ins) > 1 else []))]
                if not axes:
                    axes = [i for i, s in enumerate(ins[0].shape) if s == 1]
                res = _Sym(np.squeeze(ins[0].pts, axis=tuple(a % len(ins[0].shape) + 1 for a in axes)))
            else:
                res = np.squeeze(ins[0])
        elif op == "Concat":
            const_only()
            res = np.concatenate([np.atleast_1d(v) for v in ins], axis=at.get("axis", 0))
        else:  # pragma: no cover - guarded by SUPPORTED_OPS
            raise UnsupportedOperationError(f"ONNX op '{op}' is not supported")
        self.env[node.output[0]] = res


def load_onnx(path: str | Path) -> Network:
    """Load an ONNX file of an affine/ReLU network into a :class:`Network`."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    model = onnx.load(str(path))
    return _Importer(model, path.stem).run()


def onnx_input_shape(net: Network) -> tuple[int, ...]:
    """The full input shape (with batch axis) an onnxruntime session expects for ``net``."""
    return tuple(net.meta.get("onnx_input_shape", (1,) + tuple(net.input_shape)))
