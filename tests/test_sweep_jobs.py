"""Sweep job rows on SQLite and PostgreSQL: failed jobs keep their error and config, finished jobs are skipped."""
from __future__ import annotations

import pytest

from robustbench_local.api import compose_config
from robustbench_local.leaderboard import build_entries
from robustbench_local.results import ResultsStore
from robustbench_local.results.jobs import job_report
from robustbench_local.sweep import finished, job_row, run_job
from robustbench_local.tasks.sweep_status import format_report
from result_rows import evasion_row  # tests/ is on sys.path (pytest rootdir import mode)


def test_a_failed_job_is_recorded_then_rerun_and_a_finished_one_is_skipped(store_url, tmp_path):
    cfg = compose_config("attack=fgsm", f"results.url={store_url}", f"results.spool={tmp_path}/spool.jsonl")
    result = evasion_row("standard_cnn", {"fgsm#1": "1100"})
    calls = []

    def fails() -> list:
        calls.append("fails")
        raise RuntimeError("node lost\nsecond line")

    def works() -> list:
        calls.append("works")
        ResultsStore(store_url).record(result)
        return [result]

    with ResultsStore(store_url) as store:
        with pytest.raises(RuntimeError, match="node lost"):
            run_job(cfg, store, fails)
        (job,) = store.rows(kind="job")
        assert job["status"] == "failed" and job["metrics"]["error"] == "RuntimeError: node lost"
        assert job["config"]["attack"] == dict(cfg.attack) and job["config"]["threat"] == {"norm": "Linf", "eps": 0.1}
        assert "1 failed" in format_report(job_report(store)) and build_entries(store) == []   # a failure is no result

        assert run_job(cfg, store, works) == [result]          # the re-run replaces the failed row ...
        assert run_job(cfg, store, works) == []                # ... and a third run skips the finished job
        assert calls == ["fails", "works"]
        (job,) = store.rows(kind="job")
        assert job["status"] == "ok" and job["metrics"]["error"] is None
        assert job["metrics"]["rows"] == [result.config_hash]
        assert [e.rows for e in build_entries(store)] == [[result.config_hash]]


def test_a_job_whose_rows_are_gone_is_not_finished(store_url):
    cfg = compose_config("attack=fgsm", f"results.url={store_url}")
    store = ResultsStore(store_url)
    result = evasion_row("standard_cnn", {"fgsm#1": "1100"})
    running = job_row(cfg, "running")
    assert not finished(store, running)
    store.record(running)
    assert not finished(store, running) and "1 started but not finished" in format_report(job_report(store))
    store.record(job_row(cfg, "ok", rows=[result.config_hash]))
    assert not finished(store, running)             # ok, but the row it recorded is not in this store
    store.record(result)
    assert finished(store, running)
    store.close()
