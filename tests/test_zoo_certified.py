"""Certified training (IBP, CROWN-IBP): sound differentiable bounds, the eps ramp, and models that certify more."""
from __future__ import annotations

import pytest
import torch

from rbl_core.architectures import build
from rbl_core.threat import ThreatModel
from robustbench_local.data import load_dataset
from robustbench_local.tasks.certify import UnsoundCertificateError, certify, pgd_check
from robustbench_local.zoo import load_model
from verify.certified_training import CertifiedLoss, margin_lower_bounds


def test_margin_bounds_are_ordered_sound_and_differentiable():
    torch.manual_seed(0)
    model = build("cnn_small", (1, 8, 8), 10).double()
    x, y, eps = torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 3, 5, 9]), 0.02
    ibp = margin_lower_bounds(model, x, y, eps, 10, "ibp")
    crown = margin_lower_bounds(model, x, y, eps, 10, "crown_ibp", beta=1.0)
    assert bool((crown >= ibp - 1e-9).all()) and bool((crown > ibp + 1e-6).any())  # CROWN-IBP is tighter
    xs = (x.unsqueeze(1) + (torch.rand(4, 500, 1, 8, 8, dtype=torch.float64) * 2 - 1) * eps).clamp(0, 1)
    with torch.no_grad():
        out = model(xs.reshape(-1, 1, 8, 8)).reshape(4, 500, 10)
    margins = out.gather(2, y.view(4, 1, 1).expand(4, 500, 1)) - out                     # z_y - z_j
    assert bool((margins.min(1).values >= crown - 1e-9).all())
    loss = torch.nn.functional.cross_entropy(-crown, y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_eps_ramp_schedule():
    loss = CertifiedLoss("crown_ibp", eps=0.1, num_classes=10, warmup=0.1, ramp=0.5, kappa=(1.0, 0.0))
    assert loss.schedule(0, 100) == (0.0, 1.0, 1.0)           # warm-up: clean, eps 0
    eps, kappa, beta = loss.schedule(35, 100)                 # half way up the ramp
    assert eps == pytest.approx(0.05) and kappa == pytest.approx(0.5) and beta == pytest.approx(0.5)
    assert loss.schedule(80, 100) == pytest.approx((0.1, 0.0, 0.0))


def test_ibp_trained_model_certifies_far_more_than_standard_and_pgd_trained_ones():
    data = load_dataset("digits", "test", n=60)
    threat = ThreatModel("Linf", 0.1)
    got = {}
    for name in ("standard_cnn", "pgd_linf_cnn", "ibp_cnn"):  # the same cnn_small architecture
        model = load_model(name, "digits")
        m = certify(model, data.x, data.y, threat, timeout=10, method="bounds", workers=2, falsify=False)
        # never above the attack's robust accuracy, point by point (pgd_check raises otherwise)
        m["pgd_acc"] = pgd_check(model, data.x, data.y, threat, m["statuses"], steps=20)
        assert m["certified_acc"] <= m["pgd_acc"]
        got[name] = m
    # measured (bounds only, 60 points, eps 0.1): standard_cnn 0.083, pgd_linf_cnn 0.05, ibp_cnn 0.867
    assert got["ibp_cnn"]["certified_acc"] >= 0.6 and got["ibp_cnn"]["clean_acc"] >= 0.9
    assert got["standard_cnn"]["certified_acc"] <= 0.2 and got["pgd_linf_cnn"]["certified_acc"] <= 0.2


def test_pgd_check_rejects_a_certificate_an_attack_breaks():
    model = load_model("standard_mlp_tiny", "digits")
    data = load_dataset("digits", "test", n=10)
    with pytest.raises(UnsoundCertificateError, match="certified > empirical"):
        pgd_check(model, data.x, data.y, ThreatModel("Linf", 0.3), "h" * 10, steps=10)
