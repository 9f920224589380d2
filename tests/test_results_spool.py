"""Nothing computed is lost: the store is checked before work, and rows that cannot reach it are spooled."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from robustbench_local.api import compose_config, open_store, run_task
from robustbench_local.results import ResultsStore, StoreError
from robustbench_local.results.spool import RowSink, read_spool, spool_rows
from result_rows import evasion_row  # tests/ is on sys.path (pytest rootdir import mode)

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:9/nowhere?connect_timeout=2"


def _break(store: ResultsStore) -> None:
    # The server goes away mid-run: every later write fails with a database error.
    store.engine = create_engine(UNREACHABLE)


@pytest.mark.parametrize("url,message", [
    ("nosuchdialect://x/y", "cannot open the results store"),
    (UNREACHABLE, "cannot open the results store"),
])
def test_a_bad_results_url_fails_before_any_work(tmp_path, url, message):
    # Defect: the store was opened after the task ran, so a long run died at the end with a traceback.
    proc = subprocess.run([sys.executable, "-m", "robustbench_local.cli", f"results.url='{url}'",
                           f"hydra.run.dir={tmp_path}/out", f"results.state_dir={tmp_path}/state",
                           f"results.spool={tmp_path}/spool.jsonl", "progress=false"],
                          cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "results.url=" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists()  # the evaluation never started


def test_rows_spooled_mid_run_reach_the_store_on_the_next_run(tmp_path, monkeypatch):
    url, spool = f"sqlite:///{tmp_path}/r.db", tmp_path / "spool.jsonl"
    cfg = compose_config("task=import_rows", "task._target_=test_results_spool.two_rows_then_outage",
                         f"results.url={url}", f"results.spool={spool}", f"hydra.run.dir={tmp_path}")
    monkeypatch.chdir(tmp_path)
    rows = run_task(cfg)
    assert [r.model for r in rows] == ["first", "second"]
    assert [r["model"] for r in ResultsStore(url).rows()] == ["first"]
    assert [r.model for r in read_spool(spool)] == ["second"]  # kept, validated, nothing lost
    with open_store(cfg) as store:  # what every next run does first
        assert sorted(r["model"] for r in store.rows()) == ["first", "second"]
    assert not spool.exists()


def two_rows_then_outage(cfg, ctx):
    """A task whose results store fails between its two rows."""
    yield evasion_row("first", {"pgd#1": "1100"})
    _break(_OPEN_STORES[-1])
    yield evasion_row("second", {"pgd#1": "1000"})


_OPEN_STORES: list[ResultsStore] = []


@pytest.fixture(autouse=True)
def _track_stores(monkeypatch):
    original = ResultsStore.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _OPEN_STORES.append(self)

    monkeypatch.setattr(ResultsStore, "__init__", init)
    yield
    _OPEN_STORES.clear()


def test_a_failing_store_spools_and_a_second_failure_keeps_the_spool(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path}/r.db")
    sink = RowSink(store, tmp_path / "spool.jsonl")
    _break(store)
    sink.record(evasion_row("m", {"pgd#1": "1100"}))
    assert [r.model for r in sink.spooled] == ["m"]
    from robustbench_local.results.spool import import_spool

    assert import_spool(store, tmp_path / "spool.jsonl") == 0  # still down: the row stays in the spool
    assert len(read_spool(tmp_path / "spool.jsonl")) == 1
    assert import_spool(ResultsStore(f"sqlite:///{tmp_path}/r.db"), tmp_path / "spool.jsonl") == 1


def test_import_rows_task_loads_a_named_spool(tmp_path):
    spool_rows(tmp_path / "elsewhere.jsonl", [evasion_row("m", {"pgd#1": "1100"})])
    url = f"sqlite:///{tmp_path}/r.db"
    cfg = compose_config("task=import_rows", f"task.path={tmp_path}/elsewhere.jsonl", f"results.url={url}",
                         f"results.spool={tmp_path}/default.jsonl")
    run_task(cfg)
    assert [r["model"] for r in ResultsStore(url).rows()] == ["m"]
    with pytest.raises(Exception, match="spool file not found"):
        run_task(compose_config("task=import_rows", f"task.path={tmp_path}/missing.jsonl", f"results.url={url}",
                                f"results.spool={tmp_path}/default.jsonl"))


def test_store_errors_name_the_url_without_its_password():
    with pytest.raises(StoreError, match=r"nobody:\*\*\*@127.0.0.1"):
        ResultsStore("postgresql+psycopg://nobody:secret@127.0.0.1:9/x?connect_timeout=2")
