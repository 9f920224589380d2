"""Sweeps that lose nothing: 8 jobs through joblib and a local Ray cluster, one made to fail, then re-run.

Every other row arrives, the failure is a ``failed`` job row with its error and config, the re-run runs only
that job, and the final leaderboard equals the one of a sweep that never failed (the basic launcher's).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from safetensors.torch import save_file

from robustbench_local.leaderboard import build_entries, entry_dict
from robustbench_local.results import ResultsStore

REPO = Path(__file__).resolve().parent.parent
# 8 jobs, several per launcher worker, one made to fail: each further job adds run time, not coverage.
EPS = [round(0.02 * k, 2) for k in range(1, 9)]
FAILING = "threat.eps=0.1"


def sweep(tmp: Path, db: Path, *launcher: str, check: bool = True) -> subprocess.CompletedProcess:
    """``rbl -m`` over the eps of ``EPS`` with FGSM on 60 digits, for the flaky torch copy of the zoo CNN."""
    cmd = [sys.executable, "-m", "robustbench_local.cli", "-m", *launcher, f"results.url=sqlite:///{db}",
           f"results.state_dir={tmp}/state", f"results.spool={tmp}/spool.jsonl", f"hydra.sweep.dir={tmp}/multi",
           "progress=false", "workers=1", "task.print_leaderboard=false", "attack=fgsm", "dataset.n_test=60",
           "model=torch", "model.name=flaky_cnn", "model.target=user_nets:flaky_cnn",
           f"model.weights={tmp}/cnn.safetensors",
           f"model.kwargs={{arch:cnn_small,input_shape:[1,8,8],num_classes:10,fail_marker:{tmp}/fail}}",
           "threat.eps=" + ",".join(map(str, EPS))]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def table(db: Path) -> list[dict]:
    """The leaderboard entries without run times (the only thing two equal sweeps may differ in)."""
    store = ResultsStore(f"sqlite:///{db}")
    try:
        return [{k: v for k, v in entry_dict(e).items() if k != "time_s"} for e in build_entries(store)]
    finally:
        store.close()


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, digits_cnn) -> Path:
    """Weights of the zoo CNN for the flaky factory, and the leaderboard of a sweep that never failed."""
    tmp = tmp_path_factory.mktemp("sweep")
    save_file(digits_cnn.state_dict(), str(tmp / "cnn.safetensors"))
    sweep(tmp, tmp / "reference.db")
    return tmp


LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "ray": ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_failed_job_is_recorded_and_the_rerun_fills_exactly_the_gap(sweep_dir, launcher, tmp_path, request):
    tmp, db = sweep_dir, tmp_path / f"{launcher}.db"
    # Ray's socket paths must stay under 108 bytes: a short temp dir, not pytest's long tmp_path.
    ray_tmp = tempfile.TemporaryDirectory(prefix="rbl-ray-", ignore_cleanup_errors=True)
    request.addfinalizer(ray_tmp.cleanup)
    args = [*LAUNCHERS[launcher], f"+hydra.launcher.ray.init._temp_dir={ray_tmp.name}"] \
        if launcher == "ray" else LAUNCHERS[launcher]
    (tmp / "fail").write_text(FAILING)
    try:
        first = sweep(tmp, db, *args, check=False)
    finally:
        (tmp / "fail").unlink()
    assert first.returncode != 0   # the sweep says one job failed ...
    store = ResultsStore(f"sqlite:///{db}")
    rows = store.rows(kind="evasion")
    # ... and every other row arrived
    assert sorted(r["eps"] for r in rows) == [e for e in EPS if e != 0.1], first.stderr[-3000:]
    (failed,) = store.rows(kind="job", status="failed")
    assert failed["eps"] == 0.1 and failed["config"]["threat"]["eps"] == 0.1
    assert failed["metrics"]["error"].startswith("ModelSourceError: model.target 'user_nets:flaky_cnn' could not be")
    assert "(RuntimeError: injected failure in the job with threat.eps=0.1)" in failed["metrics"]["error"]
    assert FAILING in failed["metrics"]["overrides"]
    assert len(store.rows(kind="job", status="ok")) == len(EPS) - 1
    status = subprocess.run([sys.executable, "-m", "robustbench_local.cli", "task=sweep_status",
                             f"results.url=sqlite:///{db}", f"hydra.run.dir={tmp_path}/status"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"{len(EPS) - 1} ok, 1 failed" in status and FAILING in status and "injected failure" in status

    sweep(tmp, db, *args)   # the same sweep again, the failure gone
    after = {r["config_hash"]: r for r in store.rows(kind="evasion")}
    assert all(after[r["config_hash"]] == r for r in rows)   # the other rows were not recomputed (same times)
    assert sorted(r["eps"] for r in after.values()) == EPS
    assert [r["status"] for r in store.rows(kind="job")] == ["ok"] * len(EPS)
    store.close()
    assert table(db) == table(tmp / "reference.db")


def test_submitit_local_runs_the_slurm_launchers_code_and_records_a_bad_job(tmp_path, digits_cnn):
    # submitit_local is the SLURM launcher's code run on this machine: jobs are submitted, pickled and run apart.
    db = tmp_path / "submitit.db"
    cmd = [sys.executable, "-m", "robustbench_local.cli", "-m", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=10", f"results.url=sqlite:///{db}", f"hydra.sweep.dir={tmp_path}/multi",
           "progress=false", "workers=1", "task.print_leaderboard=false", "attack=fgsm", "dataset.n_test=40",
           "threat.eps=0.05,0.1,1.5"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    store = ResultsStore(f"sqlite:///{db}")
    assert sorted(r["eps"] for r in store.rows(kind="evasion")) == [0.05, 0.1], proc.stderr[-3000:]
    (failed,) = store.rows(kind="job", status="failed")
    assert failed["eps"] == 1.5 and "exceeds 1" in failed["metrics"]["error"]
    assert list((tmp_path / "multi" / ".submitit").iterdir())   # the jobs went through submitit
    store.close()
