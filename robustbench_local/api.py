"""RobustBench-style Python API: ``load_model`` and ``benchmark``, recording the same rows as ``rbl``."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from torch import nn

from robustbench_local.cli import compose_config, run_task
from robustbench_local.results import DEFAULT_URL
from robustbench_local.sources.models import LoadedModel, ModelInfo
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from robustbench_local.zoo import load_model

__all__ = ["benchmark", "load_model", "module_info"]


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
    ``rbl``-style overrides (``"batch_size=100"``).
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
        ctx.loaded = LoadedModel(model.eval(), module_info(model, cfg.model.name, description))
    (row,) = run_task(cfg, ctx)
    return row.metrics["clean_acc"], row.metrics["robust_acc"]
