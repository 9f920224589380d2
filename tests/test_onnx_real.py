"""Third-party VNN-COMP networks (../shared/benchmarks/real_onnx) through the one reader, for attacks and verifier.

Classifiers (sri_resnet_b, two ViTs): logits equal onnxruntime's on 200 real CIFAR-10 test images with the
README's normalisation, and PGD runs through ``model=onnx``. Every network the properties name (dist_shift's
mnist_concat too): the verifier's bounds hold onnxruntime's outputs on 1,000 points in each of five
properties' input boxes. The two dist_shift parts that are not classifiers are refused by name.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from rbl_core.onnx import ModelSourceError, load_onnx
from robustbench_local.api import compose_config, run_task
from robustbench_local.data import load_dataset
from robustbench_local.sources.models import load_user_model
from verify.bounds import TorchNet, compute_bounds
from verify.graph_ibp import interval_bounds
from verify.network import UnsupportedOperationError
from verify.torch_import import from_torch
from verify.vnnlib import load_vnnlib

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "real_onnx"
# the README's normalisation of the CIFAR-10 networks' inputs
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CLASSIFIERS = {"sri_resnet_b": "sri_resnet_b/onnx/resnet_3b2_bn_mixup_ssadv_4.0_bs128_lr-1_v2.onnx",
               "vit_pgd": "vit/onnx/pgd_2_3_16.onnx", "vit_ibp": "vit/onnx/ibp_3_3_8.onnx"}
NETWORKS = {**CLASSIFIERS, "mnist_concat": "dist_shift/onnx/mnist_concat.onnx"}


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if inp.shape[0] == 1:   # an export that fixed the batch to 1 runs one input at a time
        return np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {inp.name: x})[0]


@pytest.fixture(scope="module")
def cifar() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("cifar10", "test_full", n=200)   # the README's 200 images (cifar10_test_jpeg.npz)
    x = (data.x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x.float(), data.y


@pytest.mark.parametrize("net", sorted(CLASSIFIERS))
def test_classifier_logits_equal_onnxruntime_on_real_images(net, cifar):
    x, y = cifar
    path = REAL / CLASSIFIERS[net]
    graph = load_onnx(path)
    with torch.no_grad():
        got = graph(x).numpy()
    ref = _ort(path, x.numpy())
    diff = float(np.abs(got - ref).max())
    acc, ref_acc = float((got.argmax(1) == y.numpy()).mean()), float((ref.argmax(1) == y.numpy()).mean())
    print(f"{net}: max |logit - onnxruntime| = {diff:.2e}, clean accuracy {acc:.1%} (onnxruntime {ref_acc:.1%}) "
          f"on {len(y)} CIFAR-10 test images")
    assert diff < 1e-4 and acc == ref_acc and acc > 0.5
    # the verifier reads the same graph: a point box bounds the logits ...
    lo, hi = interval_bounds(graph, x[:2], x[:2])
    assert (lo.numpy() <= got[:2] + 1e-4).all() and (got[:2] <= hi.numpy() + 1e-4).all()
    if net.startswith("vit"):   # ... and the dense IR refuses attention (a product of two variables) by name
        with pytest.raises(UnsupportedOperationError, match=r"\(MatMul\): a product .* not affine.*graph_ibp"):
            from_torch(graph, graph.sample_shape)
    else:   # ... or holds the residual ReLU network exactly
        dense = from_torch(graph, graph.sample_shape)
        np.testing.assert_allclose(dense.forward(x[:4].double().numpy().reshape(4, -1)), got[:4], atol=1e-4)


@pytest.mark.parametrize("net", sorted(CLASSIFIERS))
def test_pgd_runs_through_model_onnx(net, tmp_path):
    cfg = compose_config("model=onnx", f"model.name={net}", f"model.path={REAL / CLASSIFIERS[net]}",
                         f"model.mean=[{','.join(map(str, MEAN))}]", f"model.std=[{','.join(map(str, STD))}]",
                         "dataset=cifar10", "dataset.n_test=8", "attack=pgd", "attack.attacks.pgd.steps=3",
                         "threat.eps=0.0078", f"results.url=sqlite:///{tmp_path}/r.db",
                         f"results.state_dir={tmp_path}/state", f"results.spool={tmp_path}/spool.jsonl",
                         "progress=false", "workers=1")
    (row,) = run_task(cfg)
    m = row.metrics
    assert m["model_info"]["source"] == "onnx" and m["n"] == 8
    assert 0 <= m["robust_acc"] <= m["clean_acc"] and [a["name"] for a in m["attacks"].values()] == ["pgd"]


def _properties(folder: str, onnx_rel: str, k: int = 5) -> list[Path]:
    with open(REAL / folder / "instances.csv") as f:
        rows = [r for r in csv.reader(f) if r and r[0] == onnx_rel]
    return [REAL / folder / r[1] for r in rows[:k]]


@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_verifier_bounds_hold_onnxruntime_outputs_in_five_property_boxes(net):
    folder, onnx_rel = NETWORKS[net].split("/", 1)
    path = REAL / NETWORKS[net]
    graph = load_onnx(path)
    dense = from_torch(graph, graph.sample_shape) if net == "mnist_concat" else None
    props = _properties(folder, onnx_rel)
    assert len(props) == 5 and all(p.suffix == ".gz" for p in props)
    gen = np.random.default_rng(0)
    for prop_path in props:
        term = load_vnnlib(prop_path).terms[0]
        lo = torch.from_numpy(term.lo).reshape(1, *graph.sample_shape)
        hi = torch.from_numpy(term.hi).reshape(1, *graph.sample_shape)
        x = (term.lo + (term.hi - term.lo) * gen.random((1000, term.lo.size))).astype(np.float32)
        y = _ort(path, x.reshape(1000, *graph.sample_shape))
        ylo, yhi = (t.numpy() for t in interval_bounds(graph, lo, hi))
        assert (ylo <= y).all() and (y <= yhi).all(), prop_path.name
        if dense is not None:   # small enough for the dense IR: its CROWN bounds hold the outputs too
            n_out = dense.output_dim
            eye = torch.eye(n_out, dtype=torch.float64)
            b = compute_bounds(TorchNet(dense), lo.reshape(1, -1), hi.reshape(1, -1), torch.cat([eye, -eye]),
                               torch.zeros(2 * n_out, dtype=torch.float64))
            low, up = b.spec_lower[0, :n_out].numpy(), -b.spec_lower[0, n_out:].numpy()
            assert (low - 1e-5 <= y).all() and (y <= up + 1e-5).all(), prop_path.name
            assert (low >= ylo - 1e-6).all()   # CROWN is never looser than IBP here


def test_non_classifier_networks_are_refused_by_name():
    folder = REAL / "dist_shift" / "onnx"
    with pytest.raises(ModelSourceError, match=r"mnist_prior\.onnx has 1 inputs .* and 2 outputs"):
        load_onnx(folder / "mnist_prior.onnx")
    with pytest.raises(ModelSourceError, match=r"mnist_generator\.onnx has 2 inputs"):
        load_onnx(folder / "mnist_generator.onnx")
    cfg = {"name": "concat", "source": "onnx", "path": str(folder / "mnist_concat.onnx"), "input_layout": "flat"}
    with pytest.raises(ModelSourceError, match=r"takes \[1, 792\] but input_layout=flat feeds each 1x28x28 image as a "
                                               r"784-vector; attacks perturb images"):
        load_user_model(cfg, (1, 28, 28), 10)
    with pytest.raises(ModelSourceError, match=r"not images .*set model.input_layout=flat"):
        load_user_model({**cfg, "input_layout": "nchw"}, (1, 28, 28), 10)


def test_vnncomp_runner_bounds_a_vit_through_the_graph_when_the_dense_ir_refuses():
    from verify.vnncomp_runner import solve_instance

    onnx_rel = "onnx/ibp_3_3_8.onnx"
    (prop,) = _properties("vit", onnx_rel, k=1)
    res = solve_instance(str(REAL / "vit" / onnx_rel), str(prop), timeout=30)
    assert res["engine"] == "graph_ibp" and res["result"] in ("unsat", "unknown")
    assert res["result"] == "unsat" or "MatMul" in res["reason"]
