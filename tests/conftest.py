"""Shared test setup: one torch thread, offline data beside the repo, a zoo cache shared by xdist workers."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("RBL_DATA_ROOT", str(SHARED / "datasets"))
# Trained once per checkout; keyed by recipe hash, so a changed recipe retrains.
os.environ.setdefault("RBL_CACHE_DIR", str(REPO / ".rbl_cache" / "zoo"))

import rbl_core  # noqa: E402,F401  (first: pins the CPU kernels before torch runs anything)
import torch  # noqa: E402

torch.set_num_threads(1)


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").exists() else None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; drop to the postgres user where we are root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (Debian's binaries) for this test process; yields ``createdb(name) -> URL``.

    Missing binaries fail the tests that need it, naming the package: CI installs it, nothing is skipped.
    """
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

    def createdb(name: str) -> str:
        subprocess.run(_as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                     name]), check=True, capture_output=True)
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    try:
        yield createdb
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty results database on each backend the suite supports: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/results.db"
    return request.getfixturevalue("postgres_server")(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder beside the repository (datasets, benchmarks)."""
    if not SHARED.exists():
        raise FileNotFoundError(f"tests need {SHARED} (datasets and benchmarks) beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def data_root(shared_dir: Path) -> Path:
    """Folder holding mnist/, cifar10/ and gtsrb/."""
    return shared_dir / "datasets"


@pytest.fixture(scope="session")
def digits_cnn() -> torch.nn.Module:
    """The zoo's default digits CNN (trained on first use, then cached)."""
    from robustbench_local.zoo import load_model

    return load_model("standard_cnn", "digits")


@pytest.fixture(scope="session")
def mnist_cnn() -> torch.nn.Module:
    """The zoo's MNIST CNN (trained on first use, then cached)."""
    from robustbench_local.zoo import load_model

    return load_model("standard_cnn", "mnist")
