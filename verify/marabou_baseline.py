"""Marabou (maraboupy) as a reference solver: the baseline of the benchmark and a test oracle.

One Marabou query per (input box, output group) pair of a :class:`verify.spec.Property`:
the property is violated iff some query is SAT. Networks from the IR are written to ONNX
first (:func:`network_to_onnx`) because that is the path Marabou reads.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .network import Network
from .spec import Property


def network_to_onnx(net: Network, path: str | Path) -> Path:
    """Write the IR network as an ONNX graph of MatMul/Add/Relu (or Sigmoid/Tanh; float32 weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cur = "input"
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        inits.append(numpy_helper.from_array(w.T.astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"B{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"z{i}"]))
        cur = f"z{i}"
        if i < net.num_layers - 1:
            op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[net.nonlinearities[i]]
            nodes.append(helper.make_node(op, [cur], [f"h{i}"]))
            cur = f"h{i}"
    nodes.append(helper.make_node("Identity", [cur], ["output"]))
    graph = helper.make_graph(nodes, net.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              [1, net.input_dim])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, net.output_dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = Path(path)
    onnx.save(model, str(path))
    return path


def float32_network(net: Network) -> Network:
    """The same network with weights rounded to float32 (what an ONNX export computes)."""
    return Network([w.astype(np.float32).astype(np.float64) for w in net.weights],
                   [b.astype(np.float32).astype(np.float64) for b in net.biases], net.input_shape, net.name,
                   nonlinearities=net.nonlinearities)


def marabou_solve(onnx_path: str | Path, prop: Property, timeout: float = 60.0) -> dict:
    """Decide ``prop`` with Marabou; returns {"status": holds/violated/unknown, "x", "time_s", "reason"}."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # maraboupy warns that its TensorFlow parser is unavailable
        from maraboupy import Marabou

    t0 = time.monotonic()
    for term in prop.terms:
        for C, d in term.groups:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                return {"status": "unknown", "x": None, "time_s": time.monotonic() - t0, "reason": "timeout"}
            network = Marabou.read_onnx(str(onnx_path))
            xin = np.asarray(network.inputVars[0]).reshape(-1)
            yout = np.asarray(network.outputVars[0]).reshape(-1)
            for i, v in enumerate(xin):
                network.setLowerBound(int(v), float(term.lo[i]))
                network.setUpperBound(int(v), float(term.hi[i]))
            for row, rhs in zip(C, d):
                network.addInequality([int(v) for v in yout], [float(c) for c in row], float(rhs))
            opts = Marabou.createOptions(verbosity=0, timeoutInSeconds=max(1, int(np.ceil(left))))
            with _quiet():
                code, vals, _ = network.solve(options=opts, verbose=False)
            if code == "sat":
                x = np.array([vals[int(v)] for v in xin])
                return {"status": "violated", "x": x, "time_s": time.monotonic() - t0, "reason": ""}
            if code != "unsat":
                return {"status": "unknown", "x": None, "time_s": time.monotonic() - t0, "reason": str(code)}
    return {"status": "holds", "x": None, "time_s": time.monotonic() - t0, "reason": ""}


def marabou_verify_network(net: Network, prop: Property, timeout: float = 60.0) -> dict:
    """Marabou on an IR network (written to a temporary ONNX file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = network_to_onnx(net, Path(tmp) / "net.onnx")
        return marabou_solve(path, prop, timeout)


class _quiet:
    """Silence C-level stdout (Marabou prints its statistics) inside a with-block."""

    def __enter__(self):
        self.fd = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)
        return self

    def __exit__(self, *exc):
        os.dup2(self.fd, 1)
        os.close(self.null)
        os.close(self.fd)
