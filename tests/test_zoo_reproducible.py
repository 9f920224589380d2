"""A zoo recipe means one set of weights: training gives bit-identical tensors whatever the caller's
torch thread count (the ``rbl`` CLI sets 1 thread, plain Python defaults to one per core), and it runs the
pinned CPU kernels, so an AVX-512 machine trains what an AVX2 one does (rbl_core/reproducibility.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from rbl_core.reproducibility import PINNED_ISA, kernels_pinned
from rbl_core.training import deterministic_training

REPO = Path(__file__).resolve().parent.parent

# The child registers the test recipe itself (recipes register per process), trains it into its own
# empty cache under the thread count it was given, and reports where the weights went and the thread
# count it sees afterwards (training must hand the caller's setting back).
_CHILD = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[1]))
from robustbench_local.zoo import load_model
from robustbench_local.zoo.cache import weights_path
from robustbench_local.zoo.recipes import Recipe, get_recipe, register_recipe
register_recipe(Recipe("test_repro_cnn", "digits", "cnn_small", dict(epochs=3, lr=3e-3, batch_size=64),
                       description="tiny recipe of tests/test_zoo_reproducible.py"))
load_model("test_repro_cnn", "digits", threat_model=None, cache_dir=sys.argv[2])
path = weights_path(get_recipe("test_repro_cnn", "digits"), Path(sys.argv[2]))
print(json.dumps({"threads_after": torch.get_num_threads(), "path": str(path)}))
"""


def _train_in_child(threads: int, cache_dir: Path) -> dict:
    """Train the test recipe in a fresh interpreter with ``threads`` torch threads; its JSON report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(threads), str(cache_dir)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_weights_do_not_depend_on_the_callers_thread_count(tmp_path: Path) -> None:
    one = _train_in_child(1, tmp_path / "threads1")
    two = _train_in_child(2, tmp_path / "threads2")
    # Each child gets back the thread count it had set before training.
    assert one["threads_after"] == 1 and two["threads_after"] == 2
    # Same recipe, same hash, same file name in both caches.
    assert Path(one["path"]).name == Path(two["path"]).name
    a = torch.load(one["path"], map_location="cpu", weights_only=True)
    b = torch.load(two["path"], map_location="cpu", weights_only=True)
    assert a["meta"] == b["meta"]
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    differing = {k: float((sa[k] - sb[k]).abs().max()) for k in sa if not torch.equal(sa[k], sb[k])}
    assert not differing, f"weights differ between 1 and 2 threads (max abs diff per tensor): {differing}"


def test_training_runs_the_pinned_cpu_kernels_and_hands_onednn_back() -> None:
    # conftest imports rbl_core before torch runs anything, as every robustbench-local package does.
    assert os.environ["ATEN_CPU_CAPABILITY"] == PINNED_ISA.lower() and os.environ["MKL_CBWR"].startswith(PINNED_ISA)
    assert kernels_pinned(), torch.backends.cpu.get_cpu_capability()
    before = torch.backends.mkldnn.enabled
    with deterministic_training():
        assert not torch.backends.mkldnn.enabled and torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.mkldnn.enabled == before


_EARLY_TORCH_CHILD = """
import warnings
import torch
torch.ones(3).sum()   # torch picks its kernels here, before rbl_core can pin them
from rbl_core.training import deterministic_training
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with deterministic_training():
        pass
print([str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])
"""


def test_training_after_torch_ran_unpinned_kernels_warns_that_the_weights_are_this_machines() -> None:
    # The user chose other kernels before importing rbl_core (pin_cpu_kernels keeps a user's value).
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _EARLY_TORCH_CHILD], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "not pinned to AVX2" in proc.stdout and "this machine's" in proc.stdout, proc.stdout
