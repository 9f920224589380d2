"""The results store on PostgreSQL (the URL for sweeps across machines): a throwaway local server."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from robustbench_local.results import ResultsStore
from test_results import _row, run_writers  # tests/ is on sys.path (pytest rootdir import mode)

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").exists() else None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; drop to the postgres user where we are root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        raise FileNotFoundError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                                "install Debian's postgresql package")
    workdir = Path(tempfile.mkdtemp(prefix="rbl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    data, port = workdir / "data", _free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-sync"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(workdir / "log"), "-w", "-o",
                                 f"-p {port} -c listen_addresses=127.0.0.1 -k {workdir} -c fsync=off", "start"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                 "results"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/results"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def test_postgres_store_is_idempotent_and_loses_no_rows_under_concurrency(postgres_url):
    run_writers(postgres_url, workers=4, rows_each=30)
    store = ResultsStore(postgres_url)
    assert len(store.rows()) == 4 * 30
    store.record(_row(0, 0.25))  # same config hash as writer 0's first row: replaced, not added
    assert len(store.rows()) == 4 * 30
    assert store.rows(model="m0")[0]["metrics"]["robust_acc"] == 0.25
    store.close()
