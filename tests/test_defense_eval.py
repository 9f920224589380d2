"""``rbl`` with preprocessing defenses: defense_eval rows per mode with a figure, and bad input refused."""
from __future__ import annotations

import pytest

from robustbench_local.results import ResultsStore
from test_cli import rbl  # tests/ is on sys.path (pytest rootdir import mode)


# The tests' F and G (zoo recipes test_raw_isp_f / _g), shared with tests/test_raw_isp.py (conftest.XDIST_GROUPS).
def test_defense_eval_records_an_adaptive_and_an_unaware_row_per_eps_and_a_figure(tmp_path):
    proc = rbl(tmp_path, "task=defense_eval", "dataset=cifar10", "model=small_cnn", "defense=raw_isp", "attack=fgsm",
               "+defense.wrapper.operators=test_raw_isp", "task.eps=[0.0156862745]", "dataset.n_test=24", "workers=1")
    rows = ResultsStore(f"sqlite:///{tmp_path}/r.db").rows(kind="evasion")
    assert sorted(r["metrics"]["adaptive"] for r in rows) == ["e2e", "unaware"]
    assert {r["defense"] for r in rows} == {"raw_isp"}
    assert list((tmp_path / "out").glob("pipeline_cifar10_small_cnn_raw_isp.png"))
    assert "attack mode" in proc.stdout and "| e2e |" in proc.stdout


@pytest.mark.parametrize("overrides,message", [
    (["defense=nosuch"], "unknown defense 'nosuch'. Available options in 'defense': bit_depth"),
    (["defense=jpeg", "dataset=cifar10", "defense.wrapper.quality=0"], "JPEG quality must be in [1, 100], got 0"),
    (["defense=raw_isp", "dataset=mnist"], "defense=raw_isp needs RGB images, but dataset=mnist is greyscale"),
    (["defense=raw_isp", "dataset=cifar10", "+defense.wrapper.operators=nosuch"], "no zoo model 'nosuch_f'"),
    (["defense=median", "defense.wrapper.kernel=4"], "median filter kernel must be odd"),
])
def test_bad_defense_input_is_one_line_exit_2_and_nothing_recorded(tmp_path, overrides, message):
    proc = rbl(tmp_path, *overrides, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    db = tmp_path / "r.db"
    assert not db.exists() or ResultsStore(f"sqlite:///{db}").rows() == []
