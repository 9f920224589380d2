"""Graph bounds on ONNX networks other groups exported: the reader's steps as graph nodes, bounds, VNN-COMP answers."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from rbl_core.onnx import load_onnx
from verify.graph.bounded import BoundedGraph, InputBox
from verify.graph.from_onnx import from_onnx_graph
from verify.graph.trace import UnsupportedGraphOpError
from verify.vnncomp_runner import solve_instance

REAL = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "real_onnx"
SRI = REAL / "sri_resnet_b"
SRI_NET = SRI / "onnx" / "resnet_3b2_bn_mixup_ssadv_4.0_bs128_lr-1_v2.onnx"


@pytest.fixture(scope="module")
def sri():
    """The VNN-COMP CIFAR-10 ResNet as the reader loads it."""
    return load_onnx(SRI_NET)


def test_resnet_steps_become_graph_nodes_computing_the_same(sri):
    graph = from_onnx_graph(sri)
    ops = [n.op for n in graph.nodes]
    assert ops.count("conv2d") >= 9 and ops.count("add") == 3   # three residual blocks stay residual
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(graph.forward(x), sri(x), atol=1e-5)


def test_resnet_bounds_contain_sampled_outputs(sri):
    # One VNN-COMP-sized box (eps 0.0035 in pixels, in the network's normalised input space) around a random image.
    gen = torch.Generator().manual_seed(2)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    x = (torch.rand(1, 3, 32, 32, generator=gen) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    box = InputBox.linf(x, 0.0035 / 0.2)
    bounded = BoundedGraph(sri, (3, 32, 32))
    crown = bounded.compute_bounds(box, torch.eye(10), "crown")
    ibp = bounded.compute_bounds(box, torch.eye(10), "ibp")
    pts = box.sample(256, gen)
    with torch.no_grad():
        out = sri(pts.reshape(-1, 3, 32, 32)).reshape(1, 256, 10)
    assert bool((out >= crown.lower.unsqueeze(1)).all() and (out <= crown.upper.unsqueeze(1)).all())
    # Measured widths: CROWN 15.8, intervals 2.1e5 (through three residual blocks).
    assert float((crown.upper - crown.lower).max()) < 100 < float((ibp.upper - ibp.lower).max())


def test_a_transformer_is_refused_by_op_name():
    with pytest.raises(UnsupportedGraphOpError, match="MatMul|Softmax|ReduceMean|Transpose|Mul"):
        from_onnx_graph(load_onnx(REAL / "vit" / "onnx" / "pgd_2_3_16.onnx"))


def test_vnncomp_violations_alpha_beta_crown_found_are_found_here_and_confirmed():
    expected = {row["property"]: row["expected"] for row in csv.DictReader(open(SRI / "expected.csv"))}
    violated = sorted(p for p, e in expected.items() if e == "violated")[:2]
    for prop in violated:
        res = solve_instance(str(SRI_NET), str(SRI / "vnnlib" / f"{prop}.vnnlib.gz"), timeout=30)
        assert res["result"] == "sat" and res["engine"] == "falsify", (prop, res.get("reason"))
        assert res["onnxruntime_ok"] is True
