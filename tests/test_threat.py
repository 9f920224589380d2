"""Threat models: distances, projection, containment, and budget validation."""
from __future__ import annotations

import pytest
import torch

from rbl_core.threat import ThreatModel, ThreatModelError


def test_projection_lands_inside_the_ball_and_box():
    x = torch.rand(8, 1, 4, 4)
    far = x + torch.randn_like(x)
    for norm, eps in (("Linf", 0.1), ("L2", 0.5)):
        t = ThreatModel(norm, eps)
        p = t.project(x, far)
        assert bool(t.contains(x, p).all())
        assert float(p.min()) >= 0 and float(p.max()) <= 1
        assert torch.all(t.distance(x, p) <= eps + 1e-5)


def test_contains_rejects_outside_and_non_finite():
    x = torch.full((3, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[0] += 0.2
    adv[1, 0, 0, 0] = float("nan")
    assert ThreatModel("Linf", 0.1).contains(x, adv).tolist() == [False, False, True]


def test_l0_counts_changed_pixels_across_channels():
    x = torch.zeros(1, 3, 4, 4)
    adv = x.clone()
    adv[0, :, 0, 0] = 1.0
    adv[0, 1, 2, 2] = 0.5
    assert ThreatModel("L0").distance(x, adv).tolist() == [2.0]


@pytest.mark.parametrize("norm,eps,message", [("Linf", -0.1, ">= 0"), ("Linf", 1.5, "exceeds 1"), ("L7", 0.1, "unknown norm")])
def test_bad_budgets_are_rejected(norm, eps, message):
    with pytest.raises(ThreatModelError, match=message):
        ThreatModel(norm, eps)
