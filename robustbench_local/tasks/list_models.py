"""Print the model zoo: every recipe, the data set it trains on, and whether its weights are cached."""
from __future__ import annotations

from omegaconf import DictConfig

from robustbench_local.results import ResultRow
from robustbench_local.tasks.base import TaskContext
from robustbench_local.zoo import default_cache_dir, list_models
from robustbench_local.zoo.cache import weights_path


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """One markdown line per recipe, filtered by ``task.dataset``."""
    cache = ctx.cache_dir or default_cache_dir()
    print("| dataset | model | architecture | defense | threat models | cached | description |")
    print("|---|---|---|---|---|---|---|")
    for r in list_models(cfg.task.dataset):
        cached = "yes" if weights_path(r, cache).exists() else "no"
        print(f"| {r.dataset} | {r.name} | {r.architecture} | {r.defense} | {', '.join(r.threat_models)} | {cached} | {r.description} |")
    return []
