"""``rbl task=sweep_status``: which sweep jobs finished, which failed (with the error) and which never finished."""
from __future__ import annotations

from omegaconf import DictConfig

from robustbench_local.results import ResultRow
from robustbench_local.results.jobs import job_report
from robustbench_local.tasks.base import TaskContext


def format_report(jobs: list[dict]) -> str:
    """Counts per status, then one line per job that failed or never finished (``running`` = started, no outcome)."""
    counts = {s: sum(j["status"] == s for j in jobs) for s in ("ok", "failed", "running")}
    lines = [f"sweep jobs: {counts['ok']} ok, {counts['failed']} failed, {counts['running']} started but not finished"]
    for job in jobs:
        if job["status"] == "ok":
            continue
        what = " ".join(job["overrides"]) or job["config_hash"][:12]
        why = job["error"] if job["status"] == "failed" else "no outcome recorded (killed, or still running)"
        lines.append(f"  {job['status']:8s} {what}: {why}")
    if counts["failed"] or counts["running"]:
        lines.append("re-run the same sweep command: jobs recorded ok are skipped, the others run again")
    return "\n".join(lines)


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Print the sweep jobs recorded in ``results.url`` (``task.status`` filters: ok, failed or running)."""
    print(format_report(job_report(ctx.store, cfg.task.status)))
    return []
