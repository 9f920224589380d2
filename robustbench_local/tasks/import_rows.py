"""Load spooled rows (kept locally when the results store failed mid-run) into the configured store."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from robustbench_local.errors import ConfigError
from robustbench_local.results import ResultRow
from robustbench_local.results.spool import import_spool
from robustbench_local.tasks.base import TaskContext


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Import ``task.path`` (default: ``results.spool``, which every run also imports first) into ``results.url``."""
    path = Path(str(cfg.task.path or cfg.results.spool)).expanduser()
    if cfg.task.path and not path.exists():
        raise ConfigError(f"task.path: spool file not found: {path}")
    count = import_spool(ctx.store, path)
    print(f"imported {count} row(s) from {path} into {cfg.results.url}")
    return []
