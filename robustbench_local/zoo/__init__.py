"""RobustBench-style model zoo: recipes trained on first use, cached by hash, loaded safely."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from robustbench_local.zoo.cache import default_cache_dir, load_or_train
from robustbench_local.zoo.recipes import Recipe, ZooError, get_recipe, list_models, register_recipe

__all__ = ["Recipe", "ZooError", "load_model", "list_models", "register_recipe", "get_recipe", "default_cache_dir"]


def load_model(model_name: str, dataset: str = "digits", threat_model: str | None = "Linf",
               cache_dir: str | Path | None = None, data_root: str | Path | None = None) -> nn.Module:
    """Return zoo model ``model_name`` for ``dataset`` in eval mode, training and caching it on first use."""
    recipe = get_recipe(model_name, dataset, threat_model)
    return load_or_train(recipe, Path(cache_dir) if cache_dir else None, data_root)
