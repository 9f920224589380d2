"""Every registered attack keeps the EvasionAttack contract (as Foolbox tests its attacks), on a tiny digits CNN.

Registered: every ``_target_: attacks.*`` node under conf/, the transfer suite, and the adaptive wrappers. Budgets
are cut so the whole contract runs in seconds; what is checked does not depend on them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from attacks.adaptive.wrappers import EOT, Unaware
from attacks.adapters.foolbox_adapter import FoolboxAttack
from attacks.base import AttackError, AttackResult, EvasionAttack
from attacks.transfer.attacks import default_transfer_attacks
from rbl_core.threat import Norm, ThreatModel
from rbl_core.training import train_classifier
from robustbench_local.data import load_dataset

CONF = Path(__file__).resolve().parent.parent / "conf"
# Small budgets: the contract holds for any budget, and black-box attacks are slow at full size.
CAPS = {"steps": 3, "binary_search_steps": 2, "max_gradient_eval_steps": 10, "n_iter": 3, "max_queries": 40,
        "time_limit_s": 30.0}
# Large enough that the eps-bounded black-box searches end early (they stop at an example once it is broken).
EPSILONS = {"Linf": [0.25, 0.5], "L2": [2.0, 4.0], "L1": [8.0, 16.0], "L0": [4.0, 16.0]}


def _registered_specs() -> dict[str, dict]:
    """Each distinct ``_target_: attacks.*`` node under conf/, keyed by where it was first found."""
    found: dict[str, dict] = {}

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            if str(node.get("_target_", "")).startswith("attacks."):
                found.setdefault(json.dumps(node, sort_keys=True), where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")

    for path in sorted(CONF.rglob("*.yaml")):
        walk(OmegaConf.to_container(OmegaConf.load(path)), str(path.relative_to(CONF)))
    return {where: json.loads(spec) for spec, where in found.items()}


def _small(spec: dict) -> EvasionAttack:
    return instantiate({k: min(v, CAPS[k]) if k in CAPS and v is not None else v for k, v in spec.items()})


# name -> attack made for a model (the wrappers need one)
ATTACKS = {where: (lambda model, spec=spec: _small(spec)) for where, spec in _registered_specs().items()}
ATTACKS.update({f"transfer:{a.name}": (lambda model, i=i: default_transfer_attacks(steps=3, restarts=2)[i])
                for i, a in enumerate(default_transfer_attacks())})
ATTACKS["Unaware(FGM)"] = lambda model: Unaware(FoolboxAttack("FGM"), model)
ATTACKS["EOT(DeepFool)"] = lambda model: EOT(FoolboxAttack("DeepFool"), samples=2)
CASES = [(where, norm) for where, make in ATTACKS.items() for norm in make(nn.Identity()).norms]


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    return train_classifier(model, load_dataset("digits", "train"), epochs=2, lr=0.01, batch_size=64, seed=0,
                            progress=False)


def _seeded(fn: Callable[..., list[AttackResult]], *args: object) -> list[AttackResult]:
    # seeded as rbl seeds a run: torch and numpy (Foolbox's PointwiseAttack draws from numpy)
    np.random.seed(0)
    torch.manual_seed(0)
    return fn(*args)


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny trained CNN and six test digits it classifies correctly."""
    model = _tiny_cnn()
    data = load_dataset("digits", "test", n=40)
    with torch.no_grad():
        keep = model(data.x).argmax(1) == data.y
    return model, data.x[keep][:6], data.y[keep][:6]


def test_every_attack_config_is_covered():
    assert len(ATTACKS) >= 20 and {"Linf", "L2", "L0"} <= {norm for _, norm in CASES}


@pytest.mark.parametrize("where,norm", CASES, ids=[f"{w}-{n}" for w, n in CASES])
def test_attack_contract(setup, where, norm):
    model, x, y = setup
    attack, epsilons = ATTACKS[where](model), EPSILONS[norm]
    runs: list[float | None] = []
    run = attack.run

    def counted(*args: object) -> AttackResult:
        runs.append(args[-1].eps)
        return run(*args)

    attack.run = counted
    results, again = (_seeded(attack.at_epsilons, model, x, y, norm, epsilons) for _ in range(2))
    # several budgets in one call: a minimisation attack runs once, unbounded; a fixed-eps attack once per budget
    assert runs == ([None] if attack.minimization else epsilons) * 2
    assert len(results) == len(epsilons)
    for eps, res, res2 in zip(epsilons, results, again):
        threat = ThreatModel(norm, eps)
        assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
        assert res.success.shape == (len(x),) and res.success.dtype == torch.bool
        assert torch.equal(res.distance, threat.distance(x, res.x_adv))
        assert res.queries is None or res.queries.shape == (len(x),)
        assert bool(ThreatModel(norm).contains(x, res.x_adv).all())  # finite and in [0, 1]
        inside = threat.contains(x, res.x_adv)
        # L0 and L1 balls have no projection: there only the claimed successes must lie inside
        assert bool(inside.all()) if threat.norm in (Norm.Linf, Norm.L2) else bool(inside[res.success].all())
        assert torch.equal(res.x_adv, res2.x_adv)  # the same seed gives the same candidates


def test_inputs_and_threat_are_checked_before_any_run(setup):
    model, x, y = setup
    fgm = FoolboxAttack("FGM")
    with pytest.raises(AttackError, match="bounded"):
        fgm(model, x, y, ThreatModel("Linf"))
    with pytest.raises(AttackError, match="supports norms"):
        fgm.at_epsilons(model, x, y, "L0", [1.0])
    with pytest.raises(AttackError, match=r"\(N, C, H, W\)"):
        fgm(model, x[0], y, ThreatModel("Linf", 0.1))


def test_candidates_outside_the_ball_are_projected_and_inside_ones_kept_bit_for_bit(setup):
    model, x, y = setup

    class Outside(EvasionAttack):
        def run(self, model, x, y, threat):
            return AttackResult(torch.cat([x[:1] + 0.5, x[1:] + 1e-3]).clamp(0, 1), torch.ones(len(x), dtype=torch.bool))

    threat = ThreatModel("Linf", 0.1)
    res = Outside()(model, x, y, threat)
    assert bool(threat.contains(x, res.x_adv).all())
    assert torch.equal(res.x_adv[1:], (x[1:] + 1e-3).clamp(0, 1))  # inside: untouched, not re-rounded
    assert res.success.tolist() == [False] + [True] * (len(x) - 1)  # a projected candidate's claim is dropped
