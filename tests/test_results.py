"""Results database: idempotent writes, filters, and no lost rows under concurrent writer processes."""
from __future__ import annotations

import multiprocessing as mp

import pytest

from robustbench_local.results import ResultRow, ResultsStore
from result_rows import evasion_row  # tests/ is on sys.path (pytest rootdir import mode)

# robust accuracy -> a 4-example mask with that share
_MASKS = {0.25: "1000", 0.5: "1100", 0.75: "1110"}


def _row(i: int, acc: float = 0.5) -> ResultRow:
    return evasion_row(f"m{i}", {"pgd#1": _MASKS[acc]}, i=i)


def test_writes_are_idempotent_by_config_hash(store_url):
    store = ResultsStore(store_url)
    key = store.record(_row(1, 0.5))
    assert store.record(_row(1, 0.25)) == key  # same config: replaces, never duplicates
    store.record(_row(2))
    rows = store.rows(dataset="digits")
    assert len(rows) == 2
    assert [r["metrics"]["robust_acc"] for r in rows if r["model"] == "m1"] == [0.25]
    assert rows[0]["versions"]["torch"].startswith("2.13")
    assert store.rows(model="m2")[0]["config"]["i"] == 2
    with pytest.raises(KeyError, match="unknown results column"):
        store.rows(colour="red")


def _writer(url: str, worker: int, n: int) -> None:
    store = ResultsStore(url)
    for j in range(n):
        store.record(_row(worker * 1000 + j))
    store.close()


def run_writers(url: str, workers: int, rows_each: int) -> None:
    """Start ``workers`` processes at once, each recording ``rows_each`` distinct rows; all must exit cleanly."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, w, rows_each)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)


def test_concurrent_processes_lose_no_rows(tmp_path):
    url = f"sqlite:///{tmp_path}/concurrent.db"
    run_writers(url, workers=6, rows_each=40)
    assert len(ResultsStore(url).rows()) == 6 * 40
