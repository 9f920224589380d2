"""Robustness curves: one Foolbox run gives every eps, the curve never rises, and fixed-eps rows agree with it."""
from __future__ import annotations

import pytest

from robustbench_local.api import compose_config, run_task
from robustbench_local.curves import FIXED_EPS, ONE_RUN, curves_by_model, plot_curves
from robustbench_local.results import ResultsStore, RowSchemaError, parse_metrics
from robustbench_local.tasks.base import TaskContext

EPSILONS = "[0.0,0.02,0.05,0.1,0.15,0.2,0.3]"


def _run(tmp_path, *overrides: str) -> list:
    cfg = compose_config(f"results.url=sqlite:///{tmp_path}/r.db", f"results.state_dir={tmp_path}/state",
                         f"results.spool={tmp_path}/spool.jsonl", "progress=false", "workers=1",
                         "dataset.n_test=60", *overrides)
    return run_task(cfg, TaskContext.from_config(cfg, tmp_path / "out"))


@pytest.fixture(scope="module")
def curve_db(tmp_path_factory, digits_cnn):
    """Curves of DeepFool and FGSM, and fixed-eps FGSM rows at 0.05 and 0.1, for the zoo digits CNN."""
    tmp = tmp_path_factory.mktemp("curves")
    _run(tmp, "task=curve", "attack=deepfool", f"task.epsilons={EPSILONS}")
    _run(tmp, "task=curve", "attack=fgsm", f"task.epsilons={EPSILONS}")
    for eps in ("0.05", "0.1"):
        _run(tmp, "attack=fgsm", f"threat.eps={eps}", "task.print_leaderboard=false")
    return tmp


def test_one_attack_run_gives_a_curve_that_never_rises(curve_db):
    store = ResultsStore(f"sqlite:///{curve_db}/r.db")
    rows = {r["attack"]: r for r in store.rows(kind="curve")}
    assert sorted(rows) == ["deepfool", "fgsm"]
    for row in rows.values():
        accs = row["metrics"]["robust_acc"]
        assert accs[0] == row["metrics"]["clean_acc"]   # eps 0 breaks nothing
        assert all(b <= a for a, b in zip(accs, accs[1:]))
        assert accs[-1] < accs[0]                        # and the attack does break examples
        assert (curve_db / "out" / f"curve_{row['attack']}.png").stat().st_size > 0
        assert row["metrics"]["figures"] == [str((curve_db / "out" / f"curve_{row['attack']}.png").resolve())]
    # The curve keeps every witness of a smaller budget, so at a fixed eps it is at most the fixed-eps FGSM run.
    fixed = {r["eps"]: r["metrics"]["robust_acc"] for r in store.rows(kind="evasion")}
    eps = rows["fgsm"]["metrics"]["epsilons"]
    for budget, acc in fixed.items():
        assert rows["fgsm"]["metrics"]["robust_acc"][eps.index(budget)] <= acc


def test_curves_by_model_joins_curve_rows_and_fixed_eps_entries(curve_db, tmp_path):
    store = ResultsStore(f"sqlite:///{curve_db}/r.db")
    (curves,) = curves_by_model(store, dataset="digits").values()   # one model: every curve under one key
    by = {(c.label, c.source): c for c in curves}
    assert set(by) == {("deepfool", ONE_RUN), ("fgsm", ONE_RUN), ("worst case", FIXED_EPS)}
    fixed = {r["eps"]: r["metrics"]["robust_acc"] for r in store.rows(kind="evasion")}
    assert by[("worst case", FIXED_EPS)].epsilons == sorted(fixed)
    assert by[("worst case", FIXED_EPS)].robust_acc == [fixed[e] for e in sorted(fixed)]
    assert plot_curves(curves, tmp_path / "all.png", "digits").stat().st_size > 0


def test_a_curve_whose_masks_do_not_nest_is_refused():
    good = {"n": 2, "attack_name": "a", "attack_key": "a#1", "clean_acc": 1.0, "clean_mask": "11",
            "epsilons": [0.0, 0.1], "masks": ["11", "10"], "robust_acc": [1.0, 0.5]}
    parse_metrics("curve", good)
    with pytest.raises(RowSchemaError, match="broken at a smaller budget"):
        parse_metrics("curve", {**good, "masks": ["10", "01"], "robust_acc": [0.5, 0.5]})
    with pytest.raises(RowSchemaError, match="strictly ascending"):
        parse_metrics("curve", {**good, "epsilons": [0.1, 0.0]})
