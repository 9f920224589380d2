"""The one re-measurement of adversarial examples, and the paths that used to accept examples unchecked."""
from __future__ import annotations

import torch
from torch import nn

from attacks.transfer.attacks import transfer_accuracy
from rbl_core.remeasure import remeasure
from rbl_core.threat import ThreatModel


class _Threshold(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0 (logits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        m = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return torch.cat([-m, m], dim=1)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((5, 1, 2, 2), 0.45)
    return x, torch.zeros(5, dtype=torch.long)


def test_only_finite_in_range_in_ball_and_fooling_candidates_count():
    x, y = _batch()
    threat = ThreatModel("Linf", 0.1)
    x_adv = x.clone()
    x_adv[0] += 0.1                   # inside the ball, mean 0.55: fooled
    x_adv[1] += 0.3                   # fooled, but outside the ball
    x_adv[2] = float("nan")           # not finite
    x_adv[3] += 0.02                  # inside, not fooled
    x_adv[4] = x[4] + torch.tensor([[[0.1, 0.1], [0.1, 0.1]]])  # inside and fooled
    checked = remeasure(_Threshold(), x, y, x_adv, threat)
    assert checked.success.tolist() == [True, False, False, False, True]
    assert checked.inside.tolist() == [True, False, False, True, True]
    assert checked.rejected == 2


def test_transfer_accuracy_ignores_transferred_examples_outside_the_ball():
    # Defect: transferred examples were counted as they came, without a containment check.
    x, y = _batch()
    far = x + 0.3                     # fools the model, but lies outside Linf 0.1
    res = transfer_accuracy(_Threshold(), x, y, {"far": far}, ThreatModel("Linf", 0.1))
    assert res["clean"] == 1.0 and res["far"] == 1.0 and res["all"] == 1.0
    near = x + 0.1
    assert transfer_accuracy(_Threshold(), x, y, {"near": near}, ThreatModel("Linf", 0.1))["near"] == 0.0
