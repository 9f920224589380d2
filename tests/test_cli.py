"""The rbl CLI end to end: a small evaluation into a database, a joblib sweep, and clear config errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustbench_local.results import ResultsStore

REPO = Path(__file__).resolve().parent.parent


def rbl(tmp_path: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    flags = [o for o in overrides if o.startswith("-")]  # Hydra flags (-m) go before the overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    cmd = [sys.executable, "-m", "robustbench_local.cli", *flags, f"results.url=sqlite:///{tmp_path}/r.db",
           f"results.state_dir={tmp_path}/state", f"results.spool={tmp_path}/spool.jsonl", f"hydra.run.dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/multi",
           "progress=false", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"rbl failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_evaluate_writes_a_row_and_the_leaderboard_reads_it(tmp_path, digits_cnn):
    rbl(tmp_path, "attack=pgd", "dataset.n_test=60")
    rows = ResultsStore(f"sqlite:///{tmp_path}/r.db").rows(kind="evasion")
    assert len(rows) == 1
    m = rows[0]["metrics"]
    assert m["n"] == 60 and m["clean_acc"] >= 0.9
    (pgd,) = [a for a in m["attacks"].values() if a["name"] == "pgd"]
    assert m["robust_acc"] <= pgd["robust_acc"] <= m["clean_acc"]
    rbl(tmp_path, "attack=pgd", "dataset.n_test=60")  # same config again: no duplicate row
    assert len(ResultsStore(f"sqlite:///{tmp_path}/r.db").rows()) == 1
    board = rbl(tmp_path, "task=leaderboard", f"task.html={tmp_path}/lb.html").stdout
    params = f"{sum(p.numel() for p in digits_cnn.parameters()):,}"
    assert f"| 1 | standard_cnn | zoo | {params} | none | digits | Linf | 0.1 | 60 |" in board
    assert (tmp_path / "lb.html").read_text().startswith("<!DOCTYPE html>")


def test_joblib_sweep_runs_in_parallel_and_records_every_job(tmp_path, digits_cnn):
    rbl(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "attack=pgd,fgsm",
        "threat.eps=0.05,0.1", "dataset.n_test=40")
    rows = ResultsStore(f"sqlite:///{tmp_path}/r.db").rows(kind="evasion")
    assert sorted((r["attack"], r["eps"]) for r in rows) == [("fgsm", 0.05), ("fgsm", 0.1), ("pgd", 0.05), ("pgd", 0.1)]
    by = {(r["attack"], r["eps"]): r["metrics"]["robust_acc"] for r in rows}
    assert by[("pgd", 0.1)] <= by[("pgd", 0.05)]  # more budget, no more robustness


@pytest.mark.parametrize("overrides,message", [
    (["model=nonexistent"], "Available options in 'model'"),
    (["threat.eps=-0.1"], "threat.eps must be >= 0"),
    (["threat.eps=2"], "exceeds 1"),
    (["model=standard_mlp_tiny", "dataset=mnist"], "no zoo model 'standard_mlp_tiny' for dataset 'mnist'"),
    (["attack=cw", "threat.norm=L0", "threat.eps=null"], "supports norms"),
])
def test_bad_configs_fail_before_work_with_a_clear_message(tmp_path, overrides, message):
    proc = rbl(tmp_path, *overrides, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    db = tmp_path / "r.db"  # the store is opened (and checked) before any work, so the file may exist
    assert not db.exists() or ResultsStore(f"sqlite:///{db}").rows() == []  # nothing ran, nothing recorded
    assert not (tmp_path / "state").exists()
