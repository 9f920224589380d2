"""The one training loop (``rbl_core.training.fit``) and optimiser factory on tiny models."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rbl_core.training import deterministic_training, fit, make_optimizer


def test_one_optimiser_over_several_models_steps_each_as_its_own_would() -> None:
    # DVERGE's members share one optimiser and one backward pass: the weights must equal those of
    # one optimiser per member stepped in turn, bit for bit.
    torch.manual_seed(0)
    models = nn.ModuleList(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3))
    ref = copy.deepcopy(models)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    data = [(x[:8], y[:8]), (x[8:], y[8:])]
    steps, epochs = [], []
    fit(models, make_optimizer(models.parameters(), "sgd", lr=0.1, weight_decay=1e-3), lambda _: data,
        lambda b, _: [(i + 1) * F.cross_entropy(m(b[0]), b[1]) for i, m in enumerate(models)], epochs=range(2),
        on_step=lambda b, losses: steps.append(len(losses)), on_epoch_end=lambda e, _: epochs.append(e))
    opts = [make_optimizer(m.parameters(), "sgd", lr=0.1, weight_decay=1e-3) for m in ref]
    with deterministic_training():
        for xb, yb in data * 2:
            for i, (m, opt) in enumerate(zip(ref, opts)):
                opt.zero_grad()
                ((i + 1) * F.cross_entropy(m(xb), yb)).backward()
                opt.step()
    assert all(torch.equal(a, b) for a, b in zip(models.parameters(), ref.parameters()))
    assert steps == [3] * 4 and epochs == [0, 1] and not models.training
    with pytest.raises(ValueError, match="choose adam or sgd"):
        make_optimizer(models.parameters(), "lbfgs", lr=0.1)
