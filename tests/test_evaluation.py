"""Evaluation: worst case across attacks, distrust of attack claims, sanity checks, resume."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.base import AttackResult, EvasionAttack
from robustbench_local.data import DataSplit
from robustbench_local.evaluation import evaluate
from rbl_core.sanity import ModelCheckError
from rbl_core.threat import ThreatModel


class ThresholdModel(nn.Module):
    """Class 1 if the mean pixel exceeds 0.5, else class 0: attacks are easy to reason about."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - m, m - 0.5], dim=1) * 10


class ShiftAttack(EvasionAttack):
    """Pushes chosen examples across the threshold by ``step``; claims success everywhere."""

    def __init__(self, name, targets, step=0.05, fail_after=None):
        self.name, self.targets, self.step, self.fail_after, self.calls = name, set(targets), step, fail_after, 0

    def run(self, model, x, y, threat):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        adv = x.clone()
        idx = [i for i in range(len(x)) if int(x[i, 0, 0, 0] * 1000) in self.targets]
        for i in idx:
            adv[i] = (x[i] + (self.step if y[i] == 0 else -self.step)).clamp(0, 1)
        return AttackResult(adv, torch.ones(len(x), dtype=torch.bool))


def _data(n=12):
    # Pixel values encode the example id (so attacks can pick targets); all near the 0.5 threshold.
    x = torch.empty(n, 1, 2, 2)
    for i in range(n):
        base = 0.47 if i % 2 == 0 else 0.53
        x[i] = base
        x[i, 0, 0, 0] = base + (i + 0.5) / 1000
    y = torch.tensor([0 if i % 2 == 0 else 1 for i in range(n)])
    ids = [int(x[i, 0, 0, 0] * 1000) for i in range(n)]
    return DataSplit(x, y, 2, "toy", "test", ("a", "b")), ids


def test_worst_case_is_per_example_and_claims_are_rechecked():
    data, ids = _data()
    model = ThresholdModel().eval()
    threat = ThreatModel("Linf", 0.1)
    a = ShiftAttack("a", ids[0:3])
    b = ShiftAttack("b", ids[2:5])
    broken = ShiftAttack("broken", ids[6:9], step=float("nan"))  # claims success with non-finite candidates
    report = evaluate(model, data, {"a": a, "b": b, "broken": broken}, threat, batch_size=5, progress=False)
    assert report.clean_acc == 1.0
    assert report.attacks["a"].robust_acc == pytest.approx(9 / 12)
    assert report.attacks["b"].robust_acc == pytest.approx(9 / 12)
    assert report.attacks["broken"].robust_acc == 1.0 and report.attacks["broken"].rejected == 3
    assert sum(report.worst_case) == 12 - 5  # union of examples 0..4
    assert report.metrics()["robust_acc"] == pytest.approx(7 / 12)


def test_resume_after_interruption_gives_the_same_numbers(tmp_path):
    data, ids = _data(12)
    model = ThresholdModel().eval()
    threat = ThreatModel("Linf", 0.1)
    full = evaluate(model, data, {"a": ShiftAttack("a", ids[::3])}, threat, batch_size=4, progress=False)
    state = tmp_path / "state.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, {"a": ShiftAttack("a", ids[::3], fail_after=2)}, threat, batch_size=4,
                 state_path=state, state_key="k", progress=False)
    resumed_attack = ShiftAttack("a", ids[::3])
    resumed = evaluate(model, data, {"a": resumed_attack}, threat, batch_size=4, state_path=state, state_key="k",
                       progress=False)
    assert resumed_attack.calls == 1  # only the batch left undone ran again
    assert resumed.worst_case == full.worst_case
    assert resumed.attacks["a"].robust == full.attacks["a"].robust


def test_sanity_checks_stop_bad_models_before_any_attack():
    data, _ = _data()
    attack = ShiftAttack("a", [])
    threat = ThreatModel("Linf", 0.1)
    with pytest.raises(ModelCheckError, match="train mode"):
        evaluate(ThresholdModel().train(), data, {"a": attack}, threat, progress=False)
    with pytest.raises(ModelCheckError, match="probabilities"):
        evaluate(nn.Sequential(ThresholdModel(), nn.Softmax(dim=1)).eval(), data, {"a": attack}, threat, progress=False)
    with pytest.raises(ModelCheckError, match=r"\(N, classes\)"):
        evaluate(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval(), data, {"a": attack}, threat, progress=False)
    assert attack.calls == 0


def test_parallel_workers_give_the_sequential_numbers(tmp_path):
    data, ids = _data(12)
    model = ThresholdModel().eval()
    threat = ThreatModel("Linf", 0.1)
    attacks = {"a": ShiftAttack("a", ids[::2]), "b": ShiftAttack("b", ids[1:4])}
    sequential = evaluate(model, data, attacks, threat, batch_size=3, progress=False)
    parallel = evaluate(model, data, attacks, threat, batch_size=3, progress=False, workers=2,
                        state_path=tmp_path / "s.json", state_key="p")
    assert parallel.worst_case == sequential.worst_case
    assert {n: o.robust for n, o in parallel.attacks.items()} == {n: o.robust for n, o in sequential.attacks.items()}
    assert sorted(parallel.attacks["a"].done_batches) == [0, 1, 2, 3]
