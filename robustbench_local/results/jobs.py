"""Sweep jobs as rows: one ``job`` row per job config, ``running`` -> ``ok`` or ``failed`` with the error.

A job row is keyed by the job's identifying config, so a re-run of the same job replaces it. It is never a
result: the leaderboard reads ``evasion`` and ``certification`` rows only, and only with status ``ok``.
``job_report`` reads them back for ``task=sweep_status`` and the leaderboard page.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robustbench_local.results.kinds import Metrics, RowSchemaError, register_kind
from robustbench_local.results.store import ResultsStore

JOB_STATUSES = ("running", "ok", "failed")


@register_kind
@dataclass(frozen=True, kw_only=True)
class JobMetrics(Metrics):
    """One sweep job: what ran it (task, overrides), what it recorded, and why it failed."""

    kind = "job"

    task: str
    overrides: list[str]
    rows: list[str] = field(default_factory=list)   # config hashes of the result rows the job recorded
    error: str | None = None                         # "Type: first line" of the exception, when it failed

    def check(self) -> None:
        """A task target is named."""
        super().check()
        if not self.task:
            raise RowSchemaError("job row: metrics.task is empty")


def job_report(store: ResultsStore, status: str | None = None) -> list[dict]:
    """The ``job`` rows of ``store`` (optionally one status), newest first: status, error, overrides, config."""
    rows = store.rows(kind="job", status=status)
    return [{"status": r["status"], "error": r["metrics"]["error"], "overrides": r["metrics"]["overrides"],
             "task": r["metrics"]["task"], "config_hash": r["config_hash"], "config": r["config"],
             "created_at": r["created_at"]} for r in reversed(rows)]
