"""Weight cache keyed by recipe hash: train on first use, load with ``weights_only=True`` after."""
from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from robustbench_local.data import load_dataset
from rbl_core.architectures import build
from rbl_core.io import atomic_write, atomic_write_text
from rbl_core.training import deterministic_training
from robustbench_local.zoo.recipes import Recipe, ZooError, resolve


# While a builder trains a recipe, nested zoo loads (e.g. the baseline a DVERGE recipe starts from)
# default to the same cache and data root as the outer call.
_ACTIVE_BUILD: ContextVar[tuple[Path, Path | str | None] | None] = ContextVar("rbl_active_build", default=None)


def default_cache_dir() -> Path:
    """``$RBL_CACHE_DIR``, else ``$XDG_CACHE_HOME/robustbench_local``, else ``~/.cache/robustbench_local``."""
    if os.environ.get("RBL_CACHE_DIR"):
        return Path(os.environ["RBL_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "robustbench_local"


def weights_path(recipe: Recipe, cache_dir: Path) -> Path:
    """Where the weights of ``recipe`` live in ``cache_dir``."""
    return cache_dir / f"{recipe.dataset}-{recipe.name}-{recipe.hash()[:16]}.pt"


def construct(recipe: Recipe, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """An untrained module with the recipe's structure."""
    if recipe.constructor:
        return resolve(recipe.constructor)(recipe, input_shape, num_classes)
    return build(recipe.architecture, input_shape, num_classes)


def _data_options(recipe: Recipe) -> dict:
    return {k: recipe.params[k] for k in ("size",) if k in recipe.params}


def load_or_train(recipe: Recipe, cache_dir: Path | None = None, data_root: Path | str | None = None) -> nn.Module:
    """Load cached weights of ``recipe`` or train and cache them; returns the model in eval mode."""
    active = _ACTIVE_BUILD.get()
    if active is not None:
        cache_dir = cache_dir or active[0]
        data_root = data_root or active[1]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = weights_path(recipe, cache_dir)
    # One process trains, concurrent ones wait and then load (pytest-xdist, joblib sweeps).
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            token = _ACTIVE_BUILD.set((cache_dir, data_root))
            try:
                # The whole build is pinned, not just train_classifier: builders may train with their own
                # loops (DVERGE), and the weights must not depend on the caller's thread count.
                with deterministic_training():
                    train = load_dataset(recipe.dataset, "train", root=data_root, n=recipe.params.get("n_train"),
                                         **_data_options(recipe))
                    torch.manual_seed(recipe.seed)
                    model = resolve(recipe.builder)(recipe, train)
            finally:
                _ACTIVE_BUILD.reset(token)
            meta = {"input_shape": list(train.input_shape), "num_classes": train.num_classes}
            checkpoint = {"state_dict": model.state_dict(), "meta": meta}
            atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
            atomic_write_text(path.with_suffix(".json"), json.dumps(
                {"recipe": recipe.name, "dataset": recipe.dataset, "hash": recipe.hash(), **meta}, indent=1))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint["meta"]
    model = construct(recipe, tuple(meta["input_shape"]), int(meta["num_classes"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ZooError(f"cached weights {path} do not fit recipe {recipe.name!r}; delete the file to retrain ({err})") from err
    return model.eval()
