"""MaxPool, AvgPool, residual additions, BatchNorm, Sigmoid and Tanh in verify: exact import, sound bounds and verdicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from test_verify_soundness import _exhaustive_property
from rbl_core.architectures import build
from verify.bounds import TorchNet, compute_bounds
from verify.network import Network, UnsupportedOperationError
from verify.torch_import import from_onnx as load_onnx
from verify.s_shaped import activate, relax_s_shaped
from verify.spec import Property, Term, local_robustness
from verify.torch_import import from_torch
from verify.verifier import verify


class _Residual(nn.Module):
    """Conv-ReLU, a BN'd conv branch added back before the next ReLU, MaxPool, a Sigmoid head."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.c1, self.c2, self.bn = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.head = head

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(h + self.bn(self.c2(h)))
        return self.head(nn.functional.max_pool2d(h, 2).flatten(1))


class _InputSkip(nn.Module):
    """A skip from the input over every ReLU layer (carried with both signs: the input may be negative)."""

    def __init__(self, n_in: int, n_out: int, width: int = 4):
        super().__init__()
        self.a, self.b = nn.Linear(n_in, width), nn.Linear(width, width)
        self.c, self.skip = nn.Linear(width, n_out), nn.Linear(n_in, n_out)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(torch.relu(h + self.b(h))) + self.skip(x)


def _randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def _models():
    torch.manual_seed(0)
    return [
        ("residual+maxpool+bn+sigmoid", _randomise_bn(_Residual(nn.Sequential(nn.Sigmoid(), nn.Linear(12, 3))).double()),
         (1, 4, 4)),
        ("cnn_small 16x16 (maxpool)", build("cnn_small", (1, 16, 16), 10), (1, 16, 16)),
        # cnn_bn's blocks at a width a test can afford (the zoo's 16x16 version has 16,384-neuron layers)
        ("cnn_bn-like (bn, maxpool, global avgpool)", _randomise_bn(nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(3, 4))), (1, 6, 6)),
        ("maxpool 3x3/2 on a conv without ReLU + avgpool", nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.MaxPool2d(3, stride=2), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3)), (1, 9, 9)),
        ("tanh+sigmoid mlp", nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.Sigmoid(),
                                           nn.Linear(4, 2)), (6,)),
        ("input skip", _InputSkip(3, 2), (3,)),
    ]


@pytest.mark.parametrize("case", range(6))
def test_torch_and_onnx_imports_compute_the_module(case, tmp_path):
    import onnxruntime as ort

    name, model, shape = _models()[case]
    model = model.float().eval()
    x = torch.rand(16, *shape) * 2 - 0.5  # also negative inputs: the IR must be exact everywhere
    with torch.no_grad():
        ref = model(x).double().numpy()
    net = from_torch(model, shape)
    np.testing.assert_allclose(net.forward(x.double().numpy().reshape(16, -1)), ref, atol=1e-5, err_msg=name)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x[:1],), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    onnx_net = load_onnx(path)
    sess = ort.InferenceSession(str(path))
    ort_out = np.concatenate([sess.run(None, {"x": x[i:i + 1].numpy()})[0] for i in range(16)])
    np.testing.assert_allclose(onnx_net.forward(x.double().numpy().reshape(16, -1)), ort_out, atol=1e-5, err_msg=name)
    assert onnx_net.nonlinearities == net.nonlinearities


def test_maxpool_after_relu_costs_no_sign_pairs():
    # post-ReLU window entries are >= 0, so the running max passes a ReLU layer as one row, not two
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2))
    net = from_torch(model, (1, 2, 2))
    assert net.hidden_sizes == [8, 2 * 4, 2 * 2]  # conv; 2 diffs + 2 kept per channel; 1 diff + 1 kept


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_s_shaped_lines_enclose_the_function(name):
    gen = torch.Generator().manual_seed(1)
    c = torch.randn(4000, generator=gen, dtype=torch.float64) * 6
    w = torch.rand(4000, generator=gen, dtype=torch.float64) ** 3 * 10
    edge_lo = torch.tensor([20.0, -40.0, 0.0, -1e-12, 3.0, -800.0], dtype=torch.float64)
    edge_up = torch.tensor([30.0, -39.0, 0.0, 1e-12, 3.0, 800.0], dtype=torch.float64)
    lo, up = torch.cat([c - w, edge_lo]), torch.cat([c + w, edge_up])
    su, tu, al, tl = relax_s_shaped(name, lo, up, 1e-9)
    z = lo[:, None] + (up - lo)[:, None] * torch.linspace(0, 1, 301, dtype=torch.float64)
    f = activate(name, z)
    assert float((f - (su[:, None] * z + tu[:, None])).max()) <= 0
    assert float((al[:, None] * z + tl[:, None] - f).max()) <= 0
    # on a convex piece the upper line is the chord: tight at both ends
    convex = (up < -0.5) & (up - lo > 0.1)
    chord_gap = (su * up + tu - activate(name, up))[convex]
    assert float(chord_gap.abs().max()) < 1e-6


def _random_s_net(seed: int, act: str) -> Network:
    rng = np.random.default_rng(seed)
    sizes = [3, 6, 5, 3]
    ws = [rng.normal(0, 1.5 / np.sqrt(a), (b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.normal(0, 0.3, b) for b in sizes[1:]]
    acts = [act, "relu"] if seed % 2 else [act, act]
    return Network(ws, bs, (3,), f"{act}{seed}", nonlinearities=acts)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_s_shaped_bounds_never_cross_sampled_outputs(act):
    gen = torch.Generator().manual_seed(0)
    for seed in range(10):
        net = _random_s_net(seed, act)
        tn = TorchNet(net)
        centre = torch.rand(8, 3, generator=gen, dtype=torch.float64) * 4 - 2
        rad = torch.rand(8, 1, generator=gen, dtype=torch.float64) * 1.5
        lo, hi = centre - rad, centre + rad
        C = torch.cat([torch.eye(3), -torch.eye(3)]).double()
        for method in ("crown", "symbolic", "interval"):
            bd = compute_bounds(tn, lo, hi, C, torch.zeros(6, dtype=torch.float64), method)
            x = lo[:, None] + (hi - lo)[:, None] * torch.rand(8, 2000, 3, generator=gen, dtype=torch.float64)
            y = tn.forward(x.reshape(-1, 3)).reshape(8, 2000, 3)
            val = torch.cat([y, -y], -1)
            assert bool((val >= bd.spec_lower[:, None] - 1e-12).all()), (seed, method)
        crown = compute_bounds(tn, lo, hi, C, torch.zeros(6, dtype=torch.float64), "crown").spec_lower
        ibp = compute_bounds(tn, lo, hi, C, torch.zeros(6, dtype=torch.float64), "interval").spec_lower
        assert bool((crown >= ibp - 1e-8).all())  # the linear bounds keep the interval bound as a floor


def test_s_shaped_verdicts_are_proofs_or_rechecked_counterexamples():
    # no exact search exists for these networks: holds must be a bound proof, violated a real input
    gen = np.random.default_rng(3)
    seen = set()
    for seed in range(16):
        net = _random_s_net(seed, "sigmoid" if seed % 4 < 2 else "tanh")
        x = gen.uniform(-1, 1, 3)
        label = int(np.argmax(net.forward(x)))
        prop = local_robustness(x, label, float(gen.choice([0.01, 0.1, 0.6])), 3, clip=None)
        v = verify(net, prop, timeout=10)
        seen.add(v.status)
        t = prop.terms[0]
        pts = t.lo + (t.hi - t.lo) * gen.random((20000, 3))
        sampled_cex = any(prop.is_counterexample(p, y) for p, y in zip(pts[:2000], net.forward(pts[:2000])))
        if v.status == "holds":
            assert v.engine == "bounds" and not sampled_cex
            assert (net.forward(pts).argmax(1) == label).all()
        elif v.status == "violated":
            assert prop.is_counterexample(v.counterexample, net.forward(v.counterexample))
        else:
            assert "no exact search" in v.reason or "bounds" in v.reason
    assert {"holds", "violated"} <= seen



def test_z3_encoding_refuses_s_shaped_networks():
    # the encoding treats every layer as a ReLU; a Sigmoid layer handed to it would give wrong proofs
    from verify.smt import encode

    net = _random_s_net(0, "sigmoid")
    with pytest.raises(ValueError, match="needs a ReLU network"):
        encode(net, -np.ones(3), np.ones(3))

def _tiny_pwl_models():
    """Small nets with MaxPool (after a ReLU and on a signed conv), residual and input skips."""
    out = []
    for seed in range(2):
        torch.manual_seed(seed)
        out.append(nn.Sequential(nn.Conv2d(1, 1, (1, 1)), nn.ReLU(), nn.MaxPool2d((1, 2), stride=1), nn.Flatten(),
                                 nn.Linear(2, 2)))
        out.append(nn.Sequential(nn.Conv2d(1, 2, (1, 2)), nn.MaxPool2d((1, 2), stride=1), nn.Flatten(),
                                 nn.Linear(2, 2)))
        out.append(_InputSkip(2, 2, width=3))
    return [from_torch(m.double(), (1, 1, 3) if isinstance(m, nn.Sequential) else (2,)) for m in out]


def test_pooling_and_skip_verdicts_match_exhaustive_enumeration():
    # thresholds just beside the sampled minimum of y0 - y1 on [0, 1]^n: the searches must branch
    rng = np.random.default_rng(0)
    seen, branched = set(), 0
    for i, net in enumerate(_tiny_pwl_models()):
        n = net.input_dim
        y = net.forward(rng.random((4000, n)))
        v = y[:, 0] - y[:, 1]
        for side in (-0.03, 0.03):
            t = v.min() + side * (v.max() - v.min())
            prop = Property([Term(np.zeros(n), np.ones(n), [(np.array([[1.0, -1.0]]), np.array([t]))])], f"t{i}")
            got = verify(net, prop, timeout=30, falsify=False)
            assert got.status != "unknown", got.reason
            assert (got.status == "violated") == _exhaustive_property(net, prop), (i, side)
            if got.status == "violated":
                assert prop.is_counterexample(got.counterexample, net.forward(got.counterexample))
            seen.add(got.status)
            branched += got.engine != "bounds"
    assert seen == {"holds", "violated"} and branched >= 6


def test_unsupported_ops_are_still_named(tmp_path):
    with pytest.raises(UnsupportedOperationError, match="Softmax"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(1)), (4,))
    with pytest.raises(UnsupportedOperationError, match="padding"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, padding=1), nn.Flatten(),
                                 nn.Linear(18, 3)), (1, 4, 4))

    class SkipOverSigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return torch.sigmoid(self.a(x)) + x

    with pytest.raises(UnsupportedOperationError, match="sigmoid layer"):
        from_torch(SkipOverSigmoid(), (3,))
    path = tmp_path / "softmax.onnx"
    torch.onnx.export(nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)), (torch.rand(1, 4),), str(path), dynamo=False)
    with pytest.raises(UnsupportedOperationError, match="Softmax"):
        load_onnx(path)
