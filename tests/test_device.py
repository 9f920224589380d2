"""One device per run: resolved once, checked before any work, honoured by evaluate, recorded as what ran."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attacks.adapters.foolbox_adapter import FoolboxAttack
from rbl_core.device import DeviceError, describe_device, resolve_device
from robustbench_local.api import compose_config, run_task
from robustbench_local.leaderboard import build_entries
from robustbench_local.results import ResultsStore
from robustbench_local.results.kinds import parse_metrics
from robustbench_local.config_schema.root import run_device
from robustbench_local.errors import ConfigError
from test_cli import rbl  # tests/ is on sys.path (pytest rootdir import mode)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as CI sees it, whether or not a GPU is present."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with cuda:0 and cuda:1, as far as resolving a device goes (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_cpu_and_auto_resolve_to_the_cpu_without_cuda(no_cuda):
    assert resolve_device("cpu") == resolve_device("auto") == torch.device("cpu")
    assert describe_device(torch.device("cpu")) == {"device": "cpu"}


@pytest.mark.parametrize("spec,message", [
    ("banana", "is not a device"), ("cuda:x", "is not a device"), ("cuda:-1", "is not a device"),
    ("cuda", "no CUDA device is available"), ("cuda:0", "no CUDA device is available"),
])
def test_bad_devices_are_clear_errors(no_cuda, spec, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(spec)


def test_gpu_specs_resolve_to_an_indexed_device(two_gpus):
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="no such GPU, this machine has 2"):
        resolve_device("cuda:2")


def test_a_cpu_only_task_never_claims_a_gpu(two_gpus):
    assert run_device(compose_config("task=evaluate", "device=cuda:1")) == torch.device("cuda", 1)
    assert run_device(compose_config("task=certify", "device=auto")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="runs on the CPU only"):
        run_device(compose_config("task=certify", "device=cuda"))


@pytest.mark.parametrize("device,message", [
    pytest.param("cuda", "no CUDA device is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ("banana", "device=banana is not a device"),
])
def test_an_unusable_device_is_one_line_exit_2_before_any_work(tmp_path, device, message):
    proc = rbl(tmp_path, f"device={device}", "attack=fgsm", "dataset.n_test=20", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("rbl: error: ") and message in proc.stderr
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "state").exists()


def _evaluate(tmp_path: Path, name: str, *overrides: str):
    cfg = compose_config("attack=fgsm", "dataset.n_test=60", "batch_size=60", "workers=1", "progress=false",
                         f"results.url=sqlite:///{tmp_path}/{name}.db", f"results.state_dir={tmp_path}/{name}",
                         f"results.spool={tmp_path}/{name}.jsonl", *overrides)
    cfg.task.print_leaderboard = False
    (row,) = run_task(cfg)
    return row


def _numbers(metrics: dict) -> dict:
    """Everything an evaluation measured, without its timings."""
    attacks = {k: {f: v for f, v in a.items() if f != "time_s"} for k, a in metrics["attacks"].items()}
    return {**{k: v for k, v in metrics.items() if k not in ("attacks", "attack_time_s")}, "attacks": attacks}


def test_auto_on_a_cpu_machine_runs_and_records_the_cpu(tmp_path, no_cuda, digits_cnn):
    auto, cpu = _evaluate(tmp_path, "auto", "device=auto"), _evaluate(tmp_path, "cpu", "device=cpu")
    assert auto.metrics["device"] == "cpu" and "gpu" not in auto.metrics
    assert auto.config == cpu.config
    assert _numbers(auto.metrics) == _numbers(cpu.metrics)
    assert auto.typed().device == "cpu" and auto.typed().oom_retries == 0
    # A row recorded before devices were kept still parses, and the leaderboard ranks it beside a new one.
    old = {k: v for k, v in cpu.metrics.items() if k not in ("device", "oom_retries")}
    assert parse_metrics("evasion", old).device is None
    store = ResultsStore(f"sqlite:///{tmp_path}/cpu.db")
    store.record(replace(cpu, metrics=old, config={**cpu.config, "old": True}))
    (entry,) = build_entries(store, "digits", "Linf")
    assert entry.clean_acc == cpu.metrics["clean_acc"]


def test_out_of_memory_halves_the_batch_and_loses_nothing(tmp_path, monkeypatch, digits_cnn):
    plain = _evaluate(tmp_path, "plain")
    run = FoolboxAttack.run
    sizes = []

    def short_of_memory(self, model, x, y, threat):
        sizes.append(len(x))
        if len(x) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return run(self, model, x, y, threat)

    monkeypatch.setattr(FoolboxAttack, "run", short_of_memory)
    halved = _evaluate(tmp_path, "halved")
    attacked = plain.metrics["clean_mask"].count("1")   # one batch of the clean-correct examples
    assert sizes[0] == attacked > 32 and sum(s for s in sizes if s <= 16) == attacked
    assert halved.metrics["oom_retries"] == sum(s > 16 for s in sizes) >= 3 and plain.metrics["oom_retries"] == 0
    assert _numbers({**halved.metrics, "oom_retries": 0}) == _numbers(plain.metrics)


# Where an attack, a defense, the evaluation or a verifier runs, the device comes from the run (the inputs'
# or the model's device), never from a literal.
DEVICE_PATHS = ("attacks", "defenses", "verify", "rbl_core", "robustbench_local/evaluation.py",
                "robustbench_local/tasks", "robustbench_local/adaptive.py", "robustbench_local/defense_wrappers.py")
FIXED_DEVICE = re.compile(r"""device\s*=\s*["'](cpu|cuda)|torch\.device\(\s*["'](cpu|cuda)|\.cuda\(|"""
                          r"""map_location\s*=\s*["'](cpu|cuda)""")
ALLOWED = {
    "rbl_core/device.py": "the one place that turns a device spec into a torch.device",
}


def test_no_attack_defense_evaluation_or_verifier_fixes_its_device():
    files = [p for entry in DEVICE_PATHS for p in ([REPO / entry] if entry.endswith(".py")
                                                  else sorted((REPO / entry).rglob("*.py")))]
    assert len(files) > 50
    fixed = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files if str(p.relative_to(REPO)) not in ALLOWED
             for n, line in enumerate(p.read_text().splitlines(), 1) if FIXED_DEVICE.search(line)]
    assert fixed == []


def test_a_gpu_run_has_its_own_key_and_a_cpu_run_keeps_its_old_one(two_gpus, tmp_path):
    from robustbench_local.tasks.base import TaskContext

    def key(*overrides: str, sections: tuple[str, ...] = ("dataset", "seed")) -> dict:
        return TaskContext.from_config(compose_config(*overrides), tmp_path).run_config(*sections)

    assert "device" not in key("device=cpu")
    assert key("device=cuda")["device"] == key("device=auto")["device"] == "cuda:0"
    assert key("task=certify", "device=auto", sections=("dataset", "device"))["device"] == "cpu"


@pytest.mark.gpu
def test_a_gpu_run_uses_the_gpu_and_says_so(tmp_path, digits_cnn):
    gpu, cpu = _evaluate(tmp_path, "gpu", "device=cuda"), _evaluate(tmp_path, "cpu", "device=cpu")
    index = torch.cuda.current_device()
    assert gpu.metrics["device"] == gpu.config["device"] == f"cuda:{index}"
    assert gpu.metrics["gpu"] == torch.cuda.get_device_name(index)
    # Other kernels, so not bit for bit; but the same model classifies the same clean digits.
    assert abs(gpu.metrics["clean_acc"] - cpu.metrics["clean_acc"]) <= 1 / gpu.metrics["n"]
