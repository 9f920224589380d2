"""Foolbox and AutoAttack adapters on the digits CNN: re-measured success, budgets, expected orderings."""
from __future__ import annotations

import pytest
import torch

from attacks.adapters.autoattack_adapter import AutoAttackAdapter
from attacks.base import AttackError
from attacks.adapters.foolbox_adapter import FoolboxAttack
from robustbench_local.data import load_dataset
from rbl_core.threat import ThreatModel


@pytest.fixture(scope="module")
def batch(digits_cnn):
    data = load_dataset("digits", "test", n=60)
    with torch.no_grad():
        keep = digits_cnn(data.x).argmax(1) == data.y
    return data.x[keep], data.y[keep]


def _fooled(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("attack,kwargs,norm,eps", [
    ("FGM", {}, "Linf", 0.1),
    ("PGD", {"steps": 20, "rel_stepsize": 0.1}, "Linf", 0.1),
    ("PGD", {"steps": 20, "rel_stepsize": 0.1}, "L2", 1.0),
    ("L2CarliniWagnerAttack", {"steps": 100, "binary_search_steps": 5, "stepsize": 0.05}, "L2", 1.5),
    ("DeepFool", {}, "Linf", 0.1),
    ("HopSkipJumpAttack", {"steps": 5, "max_gradient_eval_steps": 50}, "L2", 1.5),
])
def test_foolbox_adapter_returns_valid_adversarials(digits_cnn, batch, attack, kwargs, norm, eps):
    x, y = batch
    threat = ThreatModel(norm, eps)
    result = FoolboxAttack(attack, **kwargs)(digits_cnn, x, y, threat)
    assert result.x_adv.shape == x.shape
    assert bool(threat.contains(x, result.x_adv).all())
    fooled = _fooled(digits_cnn, result.x_adv, y)
    assert fooled.float().mean() > 0.2  # eps is large enough to break a plain CNN on many digits
    assert bool((fooled | ~result.success).all())  # every claimed success is real
    assert result.queries is not None and int(result.queries.min()) >= 1


def test_iterative_beats_single_step_and_unbounded_breaks_everything(digits_cnn, batch):
    x, y = batch
    threat = ThreatModel("Linf", 0.1)
    fgsm = _fooled(digits_cnn, FoolboxAttack("FGM")(digits_cnn, x, y, threat).x_adv, y).float().mean()
    pgd = _fooled(digits_cnn, FoolboxAttack("PGD", steps=40, rel_stepsize=0.075)(digits_cnn, x, y, threat).x_adv, y).float().mean()
    assert pgd >= fgsm
    wide = ThreatModel("Linf", 1.0)
    assert bool(_fooled(digits_cnn, FoolboxAttack("PGD", steps=40)(digits_cnn, x, y, wide).x_adv, y).all())


def test_autoattack_custom_apgd_ce_is_at_least_as_strong_as_fgsm(digits_cnn, batch):
    x, y = batch
    threat = ThreatModel("Linf", 0.1)
    aa = AutoAttackAdapter(version="custom", attacks=["apgd-ce"], seed=0)(digits_cnn, x, y, threat)
    assert bool(threat.contains(x, aa.x_adv).all())
    fgsm = FoolboxAttack("FGM")(digits_cnn, x, y, threat)
    assert _fooled(digits_cnn, aa.x_adv, y).sum() >= _fooled(digits_cnn, fgsm.x_adv, y).sum()
    again = AutoAttackAdapter(version="custom", attacks=["apgd-ce"], seed=0)(digits_cnn, x, y, threat)
    assert torch.equal(aa.x_adv, again.x_adv)  # seeded: reproducible


def test_bad_attack_configs_fail_clearly(digits_cnn, batch):
    x, y = batch
    with pytest.raises(AttackError, match="unsupported Foolbox attack"):
        FoolboxAttack("MagicAttack")
    with pytest.raises(AttackError, match="supports norms"):
        FoolboxAttack("FGSM")(digits_cnn, x, y, ThreatModel("L2", 1.0))
    with pytest.raises(AttackError, match="non-empty attacks list"):
        AutoAttackAdapter(version="custom")
    with pytest.raises(AttackError, match=r"\[0, 1\]"):
        FoolboxAttack("FGM")(digits_cnn, x * 3, y, ThreatModel("Linf", 0.1))


def test_pgd_adversarial_training_raises_robust_accuracy(digits_cnn, batch):
    from robustbench_local.zoo import load_model

    robust_model = load_model("pgd_linf_cnn", "digits")
    data = load_dataset("digits", "test", n=150)
    threat = ThreatModel("Linf", 0.1)

    def pgd_acc(model):
        adv = FoolboxAttack("PGD", steps=20, rel_stepsize=0.1)(model, data.x, data.y, threat).x_adv
        with torch.no_grad():
            return float((model(adv).argmax(1) == data.y).float().mean())

    assert pgd_acc(robust_model) > pgd_acc(digits_cnn) + 0.2
