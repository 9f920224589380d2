"""The ``unlearnable_poison`` task end to end at toy scale: config composition, rows, plots, saved data set."""
from __future__ import annotations

from pathlib import Path

import pytest

from attacks.unlearnable.dataset_io import load_poisoned
from robustbench_local.api import compose_config
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from robustbench_local.tasks.unlearnable_poison import run


def _cfg(*overrides: str):
    return compose_config("task=unlearnable_poison", "dataset=digits", "batch_size=256", *overrides)


def _ctx(cfg, out: Path) -> TaskContext:
    return TaskContext.from_config(cfg, out)


def test_task_records_poisoning_rows_and_writes_figures(tmp_path):
    cfg = _cfg("task.n_train=200", "dataset.n_test=100", "task.victim.epochs=1", "task.mixes=[0.5,1.0]",
               "task.trainings=[erm,l2_at]", "task.victim.steps=1", "progress=false")
    rows = list(run(cfg, _ctx(cfg, tmp_path)))
    # per training recipe: mix 0.5, mix 1.0 and the one-kernel control
    assert len(rows) == 6
    assert {r.kind for r in rows} == {"poisoning"}
    assert [r.attack for r in rows].count("cuda_one_kernel_control") == 2
    assert {r.defense for r in rows} == {"none", "L2-AT"}
    for r in rows:
        m = r.metrics
        assert 0 <= m["clean_trained_acc"] <= 1 and 0 <= m["poisoned_trained_acc"] <= 1
        assert m["drop"] == pytest.approx(m["clean_trained_acc"] - m["poisoned_trained_acc"])
        assert m["n_train"] == 200 and m["n_test"] == 100
        assert r.config["run"]["cuda"]["mix"] in (0.5, 1.0)
        assert r.config["run"]["victim"]["architecture"] == "cnn_bn_small"
    # rows of one recipe share one clean baseline
    erm = [r.metrics["clean_trained_acc"] for r in rows if r.defense == "none"]
    assert len(set(erm)) == 1
    for name in ("cuda_accuracy_vs_mix.png", "cuda_clean_vs_poisoned.png", "cuda_table.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    released = load_poisoned(tmp_path / "cuda_digits_train.npz")
    assert released.images.x.shape == (200, 1, 8, 8) and int(released.images.poisoned.sum()) == 200


@pytest.mark.parametrize("override, message", [
    ("task.cuda.blur=1.5", "blur"),
    ("task.cuda.kernel_size=4", "kernel_size"),
    ("task.trainings=[sgd_at]", "task.trainings"),
    ("task.mixes=[2.0]", "mix"),
    ("task.at_eps.L2=null", "at_eps"),
])
def test_task_rejects_bad_config_with_a_clear_error(tmp_path, override, message):
    cfg = _cfg(override, "task.trainings=[erm,l2_at]" if "trainings" not in override else "seed=0")
    with pytest.raises(ConfigError, match=message):
        list(run(cfg, _ctx(cfg, tmp_path)))
