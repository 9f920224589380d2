"""Run verify on a VNN-COMP instances CSV (e.g. ACAS Xu) and record one verification row.

Result files in VNN-COMP's format go to ``<output_dir>/vnncomp``; when an ``expected.csv``
(columns network, property, expected) sits beside the CSV, answers are compared with it.
"""
from __future__ import annotations

import csv
import time
from typing import Iterator
from pathlib import Path

from omegaconf import DictConfig

from robustbench_local.results import ResultRow
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from verify.vnncomp_runner import run_csv

REPO = Path(__file__).resolve().parents[2]


def _resolve(path: str) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO / p  # relative to the repository, e.g. ../shared/benchmarks/acasxu/instances.csv
    if not p.exists():
        raise ConfigError(f"task.csv: instances file not found: {path}")
    return p


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Solve the first ``task.limit`` instances of ``task.csv`` with ``task.timeout`` each."""
    tc = cfg.task
    csv_path = _resolve(str(tc.csv))
    start = time.perf_counter()
    results = run_csv(csv_path, Path(ctx.output_dir) / "vnncomp", workers=tc.workers,
                      timeout_override=tc.timeout, limit=tc.limit)
    counts = {k: sum(r["result"] == k for r in results) for k in ("sat", "unsat", "timeout", "unknown")}
    metrics: dict = {"n": len(results), **counts, "time_s_total": sum(r["time_s"] for r in results)}
    exp_path = csv_path.parent / "expected.csv"
    if exp_path.exists():
        expected = {(r["network"], r["property"]): r["expected"] for r in csv.DictReader(open(exp_path))}
        want = {"holds": "unsat", "violated": "sat"}
        wrong = [f"{Path(r['onnx']).stem}/{Path(r['vnnlib']).stem}" for r in results
                 if r["result"] in ("sat", "unsat")
                 and want.get(expected.get((Path(r["onnx"]).stem, Path(r["vnnlib"]).stem), ""), r["result"]) != r["result"]]
        metrics["wrong"] = wrong
    metrics["bad_counterexamples"] = sum(r.get("onnxruntime_ok") is False for r in results)
    config = ctx.run_config("task", "seed")
    print(f"vnncomp: {metrics}")
    yield ctx.row("verification", "verify", metrics, config, time.perf_counter() - start,
                  dataset=csv_path.parent.name, model=csv_path.name, defense="none")
