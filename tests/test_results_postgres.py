"""The results store on PostgreSQL under concurrent writer processes (the URL for sweeps across machines).

Every store test that takes the ``store_url`` fixture (conftest) runs on SQLite and on a throwaway
PostgreSQL server; this one adds concurrent writers on PostgreSQL.
"""
from __future__ import annotations

from robustbench_local.results import ResultsStore
from test_results import _row, run_writers  # tests/ is on sys.path (pytest rootdir import mode)


def test_postgres_store_is_idempotent_and_loses_no_rows_under_concurrency(postgres_server):
    url = postgres_server("concurrent")
    run_writers(url, workers=4, rows_each=30)
    store = ResultsStore(url)
    assert len(store.rows()) == 4 * 30
    store.record(_row(0, 0.25))  # same config hash as writer 0's first row: replaced, not added
    assert len(store.rows()) == 4 * 30
    assert store.rows(model="m0")[0]["metrics"]["robust_acc"] == 0.25
    store.close()
