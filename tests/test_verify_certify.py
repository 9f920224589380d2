"""Torch import and the certify task: certified accuracy is a proof, so it never exceeds attack results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_local.results import ResultsStore
from rbl_core.threat import ThreatModel
from verify.network import UnsupportedOperationError
from verify.torch_import import from_torch


class _Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4]).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor([0.3]).view(1, 1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def test_torch_conv_batchnorm_normalisation_fold_into_dense_layers():
    torch.manual_seed(0)
    model = nn.Sequential(_Normalize(), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(36, 10))
    model[2].running_mean.uniform_(-0.5, 0.5)
    model[2].running_var.uniform_(0.5, 2.0)
    model.eval()
    net = from_torch(model, (1, 8, 8))
    assert net.hidden_sizes == [144, 36]  # normalisation, conv and BN folded into one layer
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        ref = model(x).double().numpy()
    np.testing.assert_allclose(net.forward(x.double().numpy().reshape(16, -1)), ref, atol=1e-4)
    assert next(model.parameters()).dtype == torch.float32  # the user's model is not touched


def test_unsupported_torch_modules_are_named():
    with pytest.raises(UnsupportedOperationError, match="MaxPool1d"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Unflatten(1, (1, 4)), nn.MaxPool1d(2),
                                 nn.Flatten()), (4,))
    with pytest.raises(UnsupportedOperationError, match="GELU"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.GELU()), (4,))
    bn = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    net = from_torch(bn, (4,))  # the inference function (running statistics) is what is verified
    assert bn.training and net.num_layers == 1


def test_certify_never_exceeds_pgd_and_every_violation_is_real():
    from robustbench_local.data import load_dataset
    from robustbench_local.tasks.certify import certify
    from robustbench_local.zoo import load_model

    model = load_model("standard_mlp_tiny", "digits")
    data = load_dataset("digits", "test", n=30)
    threat = ThreatModel("Linf", 0.08)
    m = certify(model, data.x, data.y, threat, timeout=30, workers=2)
    assert m["n"] == 30 and m["holds"] + m["violated"] + m["unknown"] == 30
    assert m["unknown"] == 0  # a 64-16-10 MLP is decided completely
    assert 0 < m["holds"] < 30 and m["violated"] > 0
    # PGD (a sound lower bound on the errors) can never break a certified point
    x, y = data.x.clone(), data.y
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(50):
        loss = nn.functional.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta + 0.01 * g.sign()).clamp(-threat.eps, threat.eps)
        delta = ((x + delta).clamp(0, 1) - x).detach().requires_grad_(True)
    with torch.no_grad():
        broken = model(x + delta).argmax(1) != y
    statuses = m["statuses"]
    assert not any(broken[i] and statuses[i] == "h" for i in range(30))
    assert m["certified_acc"] <= 1 - broken.float().mean().item() + 1e-9


def _rbl(tmp_path: Path, *overrides: str) -> None:
    # in-process Hydra compose + the CLI's run_task: the same path as `rbl`, without a new interpreter
    from robustbench_local.api import compose_config, run_task

    run_task(compose_config(f"results.url=sqlite:///{tmp_path}/r.db", f"results.state_dir={tmp_path}/state",
                            "progress=false", *overrides))


def test_rbl_certify_row_lines_up_with_the_evaluation(tmp_path):
    common = ["model=standard_mlp_tiny", "dataset.n_test=20", "threat.eps=0.05"]
    _rbl(tmp_path, "task=certify", "task.timeout=20", *common)
    _rbl(tmp_path, "attack=pgd", "task.print_leaderboard=false", *common)
    store = ResultsStore(f"sqlite:///{tmp_path}/r.db")
    cert = store.rows(kind="certification")
    ev = store.rows(kind="evasion")
    assert len(cert) == 1 and len(ev) == 1
    c = cert[0]
    assert (c["dataset"], c["model"], c["threat_model"], c["eps"], c["defense"]) == \
        (ev[0]["dataset"], ev[0]["model"], ev[0]["threat_model"], ev[0]["eps"], ev[0]["defense"])
    assert set(c["metrics"]) >= {"certified_acc", "n", "holds", "violated", "unknown"}
    assert c["metrics"]["n"] == 20
    assert c["metrics"]["certified_acc"] <= ev[0]["metrics"]["robust_acc"] + 1e-9
    from robustbench_local.leaderboard import build_entries

    (entry,) = build_entries(store, "digits", "Linf")
    assert entry.certified_acc == c["metrics"]["certified_acc"] and not entry.flags
