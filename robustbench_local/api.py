"""The Python API under ``rbl``: compose a config, run its task recording each row, and RobustBench-style
``load_model`` / ``benchmark`` that record the same rows as ``rbl``."""
from __future__ import annotations

import hashlib
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which fails without git

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import get_method  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch import nn  # noqa: E402

from robustbench_local.config_schema import register_configs, validate  # noqa: E402
from robustbench_local.errors import ConfigError  # noqa: E402
from robustbench_local.results import DEFAULT_URL, ResultRow, ResultsStore  # noqa: E402
from robustbench_local.results.spool import RowSink, import_spool  # noqa: E402
from robustbench_local.sources.models import LoadedModel, ModelInfo  # noqa: E402
from robustbench_local.sweep import run_job, tracked  # noqa: E402
from robustbench_local.tasks.base import TaskContext  # noqa: E402
from robustbench_local.tasks.leaderboard import render  # noqa: E402
from robustbench_local.zoo import load_model  # noqa: E402

__all__ = ["benchmark", "compose_config", "load_model", "module_info", "open_store", "run_task"]

register_configs()  # conf/ extends these schemas, so they must be stored before any compose


def _conf_dir() -> Path:
    """The Hydra config tree: the copy a wheel ships in the package, else ``conf/`` of the checkout."""
    here = Path(__file__).resolve().parent
    return here / "conf" if (here / "conf" / "config.yaml").exists() else here.parent / "conf"


CONF_DIR = _conf_dir()


def compose_config(*overrides: str) -> DictConfig:
    """``conf/config.yaml`` composed with command-line style overrides, as ``rbl`` would (no run dir)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _summary(row: ResultRow) -> str:
    numbers = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return f"[{row.kind}] {row.dataset}/{row.model} ({row.defense}) {row.attack} {row.threat_model} eps={row.eps}: {numbers}"


@contextmanager
def open_store(cfg: DictConfig) -> Iterator[ResultsStore]:
    """The results store, checked writable before any work, with rows a failed run spooled imported; closed at exit."""
    with ResultsStore(cfg.results.url) as store:
        store.check_writable()
        imported = import_spool(store, cfg.results.spool)
        if imported:
            print(f"rbl: imported {imported} spooled row(s) from {cfg.results.spool} into {cfg.results.url}")
        yield store


def run_task(cfg: DictConfig, ctx: TaskContext | None = None) -> list[ResultRow]:
    """Run ``cfg.task`` (with a fresh context unless ``ctx`` is given), recording each row as the task yields it.

    The store is opened once for the run. Inside a sweep the job's outcome is recorded too, and a job already
    recorded ``ok`` is skipped.
    """
    if tracked(cfg):
        with open_store(cfg) as store:
            return run_job(cfg, store, lambda: _validated_rows(cfg, ctx, store))
    validate(cfg)   # before the store is opened: a bad config leaves no database behind
    with open_store(cfg) as store:
        return _run_rows(cfg, ctx, store)


def _validated_rows(cfg: DictConfig, ctx: TaskContext | None, store: ResultsStore) -> list[ResultRow]:
    # A sweep job validates inside the job, so a bad config is recorded as that job's failure.
    validate(cfg)
    return _run_rows(cfg, ctx, store)


def _run_rows(cfg: DictConfig, ctx: TaskContext | None, store: ResultsStore) -> list[ResultRow]:
    torch.set_num_threads(int(cfg.torch_threads))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    target = cfg.task.get("_target_")
    if not target:
        raise ConfigError("task._target_ is missing: choose a task, e.g. task=evaluate")
    output_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    sink = RowSink(store, cfg.results.spool)
    ctx = ctx or TaskContext.from_config(cfg, output_dir)
    ctx.store = store   # the tasks that read rows (leaderboard, sweep status, import) use the run's store
    for row in get_method(target)(cfg, ctx) or []:
        sink.record(row)
        print(_summary(row))
    if cfg.task.get("print_leaderboard"):
        print(f"\nLeaderboard ({cfg.dataset.name}, {cfg.threat.norm}) from {cfg.results.url}:")
        render(store, cfg.dataset.name, str(cfg.threat.norm))
    return sink.recorded + sink.spooled


def module_info(module: nn.Module, name: str, description: str = "") -> ModelInfo:
    """Model info of an in-memory module; its identity hashes the class and every weight, bit for bit."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return ModelInfo(name=name, source="python", architecture=type(module).__name__,
                     parameters=sum(p.numel() for p in module.parameters()), training="external",
                     description=description, identity=f"sha256:{digest.hexdigest()}")


def benchmark(model: nn.Module | str, dataset: str = "digits", threat_model: str = "Linf", eps: float | None = 0.1,
              n_examples: int | None = None, attacks: str = "autoattack", *, model_name: str | None = None,
              description: str = "", data_root: str | Path | None = None, data_path: str | Path | None = None,
              results_url: str = DEFAULT_URL, overrides: Sequence[str] = ()) -> tuple[float, float]:
    """Evaluate ``model`` (a module, or a zoo recipe name) like ``rbl`` does; returns (clean_acc, robust_acc).

    ``attacks`` names an ``attack`` config (``autoattack``, ``default``, ``pgd``, ...). The evasion row goes to
    ``results_url`` exactly as from the CLI, so the model is ranked on the same leaderboard.
    ``data_path`` is the folder or .npz file of ``dataset="folder"`` / ``"npz"``; ``overrides`` are further
    ``rbl``-style overrides (``"batch_size=100"``, ``"device=auto"``); a module is moved to that device in place.
    """
    zoo = isinstance(model, str)
    cfg = compose_config(f"dataset={dataset}", f"attack={attacks}", "task=evaluate", *overrides)
    # Set programmatically, not as override strings, so paths and descriptions need no quoting.
    cfg.threat.norm, cfg.threat.eps, cfg.dataset.n_test = threat_model, eps, n_examples
    cfg.model.name = model if zoo else (model_name or type(model).__name__)
    cfg.model.source, cfg.model.description = ("zoo" if zoo else "python"), description
    cfg.results.url, cfg.task.print_leaderboard = results_url, False
    if data_root is not None:
        cfg.dataset.root = str(data_root)
    if data_path is not None:
        cfg.dataset.path = str(data_path)
    ctx = TaskContext.from_config(cfg, Path.cwd())
    if not zoo:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"benchmark: model must be an nn.Module or a zoo recipe name, got {type(model).__name__}")
        ctx.loaded = LoadedModel(model.eval().to(ctx.device), module_info(model, cfg.model.name, description))
    (row,) = run_task(cfg, ctx)
    return row.metrics["clean_acc"], row.metrics["robust_acc"]
