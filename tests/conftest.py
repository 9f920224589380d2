"""Shared test setup: one torch thread, offline data beside the repo, a zoo cache shared by xdist workers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("RBL_DATA_ROOT", str(SHARED / "datasets"))
# Trained once per checkout; keyed by recipe hash, so a changed recipe retrains.
os.environ.setdefault("RBL_CACHE_DIR", str(REPO / ".rbl_cache" / "zoo"))

import torch  # noqa: E402

torch.set_num_threads(1)


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
