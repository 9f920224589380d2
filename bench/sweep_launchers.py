"""The same 20-job sweep (FGSM on 60 digits at 20 eps) on the basic, joblib and Ray launchers, as whole processes.

Each launcher writes into a fresh database (a re-run would skip every finished job); every run must record
all 20 rows. Prints wall seconds per launcher (median of --repeats) and the ratio to the basic launcher
measured in the same run. Needs the ray extra: pip install -e ".[ray]".
Usage: python bench/sweep_launchers.py [--repeats 1] [--jobs 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robustbench_local.results import ResultsStore

REPO = Path(__file__).resolve().parent.parent
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "ray": ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false"],
}


def sweep_command(db: Path, jobs: int, launcher: list[str], tmp: Path) -> list[str]:
    """The ``rbl -m`` command of the benchmark sweep on ``launcher`` into ``db``."""
    eps = ",".join(f"{0.01 * k:.2f}" for k in range(1, jobs + 1))
    extra = [f"+hydra.launcher.ray.init._temp_dir={tmp}/ray"] if "hydra/launcher=ray" in launcher else []
    return [sys.executable, "-m", "robustbench_local.cli", "-m", *launcher, *extra, f"results.url=sqlite:///{db}",
            f"hydra.sweep.dir={tmp}/multi", "progress=false", "workers=1", "task.print_leaderboard=false",
            "attack=fgsm", "dataset.n_test=60", f"threat.eps={eps}"]


def timed(name: str, jobs: int, tmp: Path, run: int) -> float:
    """Wall seconds of one sweep process; raises unless every job recorded its row."""
    db = tmp / f"{name}{run}.db"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run(sweep_command(db, jobs, LAUNCHERS[name], tmp), cwd=REPO, env=env, check=True,
                   capture_output=True)
    wall = time.perf_counter() - start
    rows = len(ResultsStore(f"sqlite:///{db}").rows(kind="evasion"))
    if rows != jobs:
        raise SystemExit(f"{name}: {rows} of {jobs} rows recorded")
    return wall


def main() -> None:
    """Time each launcher and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rbl-bench-"))   # short: Ray's socket paths must stay under 108 bytes
    walls = {name: statistics.median(timed(name, args.jobs, tmp, r) for r in range(args.repeats)) for name in LAUNCHERS}
    print(f"| launcher | wall s ({args.jobs} jobs, median of {args.repeats}) | ratio to basic |\n|---|---|---|")
    for name, wall in walls.items():
        print(f"| {name} | {wall:.1f} | {wall / walls['basic']:.2f} |")


if __name__ == "__main__":
    main()
