"""Sweep jobs that keep account of themselves: a job that raises leaves a ``failed`` row with its error and
config while the other jobs go on, and a re-run of the same sweep skips every job already recorded ``ok``.

Jobs are told apart by their identifying config (the keys of ``tasks.base.IDENTIFYING``), the same for a job
however the sweep was launched (basic, joblib, Ray, SLURM). Each job opens the store once, itself: an engine
made before the launcher forks or pickles the job cannot travel with it.
"""
from __future__ import annotations

from typing import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from robustbench_local.results import ResultRow, ResultsStore
from robustbench_local.results.spool import RowSink
from robustbench_local.results.store import first_line
from robustbench_local.tasks.base import IDENTIFYING

# Tasks that read the store rather than compute rows: never skipped, never tracked.
REPORT_TASKS = frozenset(f"robustbench_local.tasks.{name}.run"
                         for name in ("leaderboard", "sweep_status", "list_models", "import_rows"))


def in_sweep() -> bool:
    """True inside a job of an ``rbl -m`` sweep (any launcher)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def tracked(cfg: DictConfig) -> bool:
    """True when this run is a sweep job whose outcome is recorded as a ``job`` row."""
    return in_sweep() and cfg.task.get("_target_") not in REPORT_TASKS


def job_row(cfg: DictConfig, status: str, rows: list[str] | None = None, error: str | None = None) -> ResultRow:
    """The ``job`` row of ``cfg`` with ``status``; its config hash is the same for every run of this job."""
    config = {s: OmegaConf.to_container(cfg[s], resolve=True) if isinstance(cfg.get(s), DictConfig) else cfg.get(s)
              for s in IDENTIFYING if s in cfg}
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    attacks = cfg.attack.get("attacks") if cfg.get("attack") is not None else None
    return ResultRow(kind="job", dataset=str(cfg.dataset.name), model=str(cfg.model.name),
                     attack="+".join(attacks) if attacks else "", defense=str(cfg.defense.name),
                     threat_model=str(cfg.threat.norm), eps=cfg.threat.eps, seed=int(cfg.seed), status=status,
                     metrics={"task": str(cfg.task.get("_target_")), "overrides": overrides, "rows": rows or [],
                              "error": error}, config=config)


def finished(store: ResultsStore, job: ResultRow) -> bool:
    """True if ``job`` was recorded ``ok`` and every row it recorded is still in the store."""
    prior = store.rows(config_hash=job.config_hash)
    if not prior or prior[0]["status"] != "ok":
        return False
    return all(len(store.rows(config_hash=key, status="ok")) == 1 for key in prior[0]["metrics"]["rows"])


def run_job(cfg: DictConfig, store: ResultsStore, run: Callable[[], list[ResultRow]]) -> list[ResultRow]:
    """Run one sweep job through ``run`` unless ``store`` has it done; record ``running``, then ``ok`` or ``failed``."""
    job = job_row(cfg, "running")
    if finished(store, job):
        print(f"rbl: job already recorded ok, skipped: {' '.join(job.metrics['overrides']) or '(no overrides)'}")
        return []
    jobs = RowSink(store, cfg.results.spool)   # a store failure keeps the job row in the spool
    jobs.record(job)
    try:
        rows = run()
    except Exception as err:
        jobs.record(job_row(cfg, "failed", error=f"{type(err).__name__}: {first_line(err)}"))
        raise
    jobs.record(job_row(cfg, "ok", rows=[r.config_hash for r in rows]))
    return rows
