"""DVERGE's published effect at small scale on real MNIST: less transfer between sub-models, and more
robustness to black-box transfer attacks at about the same clean accuracy as the baseline ensemble."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.transfer.attacks import craft_transfer_examples, default_transfer_attacks, transfer_accuracy
from defenses.dverge.ensemble import Ensemble
from defenses.dverge.transferability import mean_off_diagonal, transferability_matrix
from rbl_core.threat import ThreatModel
from robustbench_local.data import load_dataset
from robustbench_local.zoo import load_model
from robustbench_local.zoo.recipes import Recipe, register_recipe

# Test-scale recipes (2,000 training images, few epochs); trained once and cached like any zoo model.
_BASE = dict(members=3, average="prob", n_train=2000, epochs=4, lr=3e-3, batch_size=128)
_DVERGE = dict(members=3, average="prob", n_train=2000, baseline="test_baseline_ens3", baseline_params=_BASE,
               epochs=2, lr=0.01, batch_size=128, distill_eps=0.3, distill_step_size=0.03, distill_steps=10)
_COMMON = dict(dataset="mnist", architecture="cnn_small", constructor="robustbench_local.zoo.recipes_dverge:construct_ensemble",
               threat_models=("Linf",))
for _r in (Recipe("test_baseline_ens3", params=_BASE, builder="robustbench_local.zoo.recipes_dverge:build_baseline_ensemble",
                  **_COMMON),
           Recipe("test_surrogate_ens3", params=_BASE, seed=7,
                  builder="robustbench_local.zoo.recipes_dverge:build_baseline_ensemble", **_COMMON),
           Recipe("test_dverge_ens3", params=_DVERGE, builder="robustbench_local.zoo.recipes_dverge:build_dverge_ensemble",
                  **_COMMON)):
    register_recipe(_r)

EPS = 0.2


@pytest.fixture(scope="module")
def models() -> dict[str, Ensemble]:
    """Baseline, DVERGE (warm-started from the baseline) and a hold-out surrogate ensemble."""
    return {k: load_model(f"test_{k}_ens3", "mnist") for k in ("baseline", "dverge", "surrogate")}


@pytest.fixture(scope="module")
def test_data():
    """First 300 MNIST test-split images."""
    return load_dataset("mnist", "test", n=300)


def test_dverge_lowers_transferability_between_submodels(models, test_data) -> None:
    torch.manual_seed(0)
    mats = {k: transferability_matrix(list(models[k].members), test_data.x, test_data.y, EPS, steps=10,
                                      restarts=1, n=200)[0] for k in ("baseline", "dverge")}
    base, dverge = mean_off_diagonal(mats["baseline"]), mean_off_diagonal(mats["dverge"])
    # The baseline's sub-models share their vulnerabilities: most PGD examples transfer.
    assert base > 0.5, mats["baseline"]
    # DVERGE diversifies them: transfer drops sharply (paper: near-total -> low).
    assert dverge < base - 0.25, (mats["baseline"], mats["dverge"])
    off = ~np.eye(3, dtype=bool)
    assert mats["dverge"][off].max() < mats["baseline"][off].min() + 0.1


def test_dverge_resists_transfer_attacks_at_equal_clean_accuracy(models, test_data) -> None:
    torch.manual_seed(0)
    attacks = default_transfer_attacks(steps=10, restarts=1)
    adv = craft_transfer_examples({"surrogate": models["surrogate"]}, test_data.x, test_data.y, EPS, attacks)
    threat = ThreatModel("Linf", EPS)
    res = {k: transfer_accuracy(models[k], test_data.x, test_data.y, adv, threat) for k in ("baseline", "dverge")}
    assert abs(res["dverge"]["clean"] - res["baseline"]["clean"]) <= 0.03, res
    assert res["baseline"]["clean"] > 0.85, res
    # Robust = survives every transfer attack from the hold-out ensemble.
    assert res["dverge"]["all"] > res["baseline"]["all"] + 0.1, res
    # Every attack that transfers well to the baseline transfers less to DVERGE.
    strong = [key for key in adv if res["baseline"][key] < 0.5]
    assert strong and all(res["dverge"][key] > res["baseline"][key] + 0.1 for key in strong), res


def test_dverge_eval_task_records_ensemble_rows(models, tmp_path) -> None:
    from robustbench_local.api import compose_config
    from robustbench_local.results import ResultsStore
    from robustbench_local.errors import ConfigError
    from robustbench_local.tasks.base import TaskContext
    from robustbench_local.tasks.dverge_eval import run

    cfg = compose_config("task=dverge_eval", "dataset=mnist", "model.name=test_dverge_ens3", "batch_size=500",
                         "task.n_eval=60", "task.surrogates=[test_surrogate_ens3]", f"task.eps=[{EPS}]",
                         "task.steps=3", "task.restarts=1", f"task.transferability.eps={EPS}",
                         "task.transferability.steps=3", "task.transferability.restarts=1",
                         "task.transferability.n=30")
    ctx = TaskContext.from_config(cfg, tmp_path)
    rows = list(run(cfg, ctx))
    assert [r.kind for r in rows] == ["ensemble", "ensemble"]
    transfer, matrix = rows
    assert transfer.eps == EPS and 0 <= transfer.metrics["transfer_acc"] <= transfer.metrics["clean_acc"] <= 1
    assert len(transfer.metrics["per_attack"]) == 5
    assert np.array(matrix.metrics["matrix"]).shape == (3, 3) and matrix.metrics["n"] <= 30
    assert (tmp_path / "transferability_mnist_test_dverge_ens3.png").exists()
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    for r in rows:
        store.record(r)
    assert len(store.rows(kind="ensemble", model="test_dverge_ens3")) == 2
    store.close()
    cfg.model.name = "standard_cnn"
    with pytest.raises(ConfigError, match="needs an ensemble model"):
        list(run(cfg, TaskContext.from_config(cfg, tmp_path)))
