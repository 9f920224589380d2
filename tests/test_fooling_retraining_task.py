"""Retraining with a "fooling" class (Nguyen et al. 2015) and the `rbl` fooling tasks end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attacks.fooling.direct_encoding import DirectEncoding
from attacks.fooling.map_elites import MapElitesConfig
from attacks.fooling.retraining import RetrainingConfig, retraining_experiment, with_fooling_class
from robustbench_local.zoo.builders import recipe_trainer
from robustbench_local.api import compose_config, run_task
from robustbench_local.data import load_dataset
from robustbench_local.errors import ConfigError


def test_fooling_class_is_appended_and_balanced():
    train = load_dataset("digits", "train")
    fooling = torch.rand(7, *train.input_shape)
    data = with_fooling_class(train, fooling, balance=True, seed=0)
    assert data.num_classes == 11 and data.class_names[-1] == "fooling"
    assert (data.y == 10).sum() == len(train) // 10 and len(data) == len(train) + len(train) // 10
    assert torch.equal(data.x[: len(train)], train.x)
    plain = with_fooling_class(train, fooling, balance=False, seed=0)
    assert (plain.y == 10).sum() == 7
    with pytest.raises(ValueError, match="shape"):
        with_fooling_class(train, torch.rand(3, 1, 4, 4), balance=True, seed=0)
    with pytest.raises(ValueError, match="rounds"):
        RetrainingConfig(rounds=0)


def test_retraining_rejects_old_fooling_images_but_evolution_fools_again(digits_cnn):
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    build_fn, train_fn = recipe_trainer("standard_cnn", "digits", train.input_shape)
    rounds = retraining_experiment(
        digits_cnn, train, test, DirectEncoding(train.input_shape), build_fn, train_fn,
        MapElitesConfig(generations=150, stop_confidence=0.99), RetrainingConfig(rounds=2, runs_per_round=2), seed=0)
    assert [r.round for r in rounds] == [0, 1, 2]
    assert rounds[0].result.confidence.min() >= 0.99 and rounds[0].rejected_previous is None
    assert rounds[1].num_fooling_train < rounds[2].num_fooling_train      # the fooling class accumulates
    for r in rounds[1:]:
        assert r.clean_accuracy >= 0.95                 # the real task is not harmed
        assert r.rejected_previous >= 0.9               # DNN_i learned the fooling class ...
        assert r.result.confidence.min() >= 0.99        # ... yet evolution fools it again (paper, MNIST)
        assert r.result.confidence.shape == (10,)       # cells only for the real classes
        assert r.to_metrics()["classes_at_0.99"] == 10


def _run(tmp_path: Path, monkeypatch, *overrides: str):
    monkeypatch.chdir(tmp_path)
    return run_task(compose_config(f"results.url=sqlite:///{tmp_path}/rbl.db", *overrides))


def test_rbl_map_elites_cppn_task_records_rows_and_grid(tmp_path, monkeypatch):
    rows = _run(tmp_path, monkeypatch, "task=fooling_map_elites_cppn", "dataset=digits", "task.log_every=0",
                "task.map_elites.stop_confidence=0.99", "task.map_elites.generations=100")
    (row,) = rows
    m = row.metrics
    assert row.kind == "fooling" and row.attack == "map_elites_cppn"
    assert m["classes_at_0.99"] == 10 and m["oracle_queries"] == m["evaluations"]
    assert len(m["evaluations_to_0.99"]) == 10 and min(m["evaluations_to_0.99"]) > 0
    assert Path(m["grid_png"]).stat().st_size > 1000
    assert (tmp_path / "map_elites_cppn.npz").exists()


def test_rbl_gradient_ascent_task(tmp_path, monkeypatch):
    (row,) = _run(tmp_path, monkeypatch, "task=fooling_gradient_ascent", "dataset=digits")
    assert row.metrics["classes_at_0.9999"] == 10
    assert all(s >= 0 for s in row.metrics["steps_to_0.9999"])
    assert Path(row.metrics["grid_png"]).exists()


def test_rbl_fooling_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="task.method"):
        _run(tmp_path, monkeypatch, "task=fooling_map_elites_direct", "dataset=digits", "task.method=annealing")
    with pytest.raises(ConfigError, match="task.map_elites"):
        _run(tmp_path, monkeypatch, "task=fooling_map_elites_direct", "dataset=digits", "+task.map_elites.popsize=3")


def test_rbl_retraining_task_records_one_row_per_round(tmp_path, monkeypatch):
    rows = _run(tmp_path, monkeypatch, "task=fooling_retraining", "dataset=digits", "task.encoding=cppn",
                "task.map_elites.cross_rate=0", "task.map_elites.stop_confidence=0.99",
                "task.retraining.rounds=1", "task.retraining.runs_per_round=1")
    assert [r.metrics["round"] for r in rows] == [0, 1]
    assert all(r.kind == "fooling" and r.attack == "retraining_map_elites_cppn" for r in rows)
    assert rows[1].metrics["num_fooling_train"] > 0 and rows[1].metrics["rejected_previous"] >= 0.9
    assert rows[0].config != rows[1].config                     # distinct idempotency keys per round
    assert (tmp_path / "retraining_map_elites_cppn_round1.png").exists()
