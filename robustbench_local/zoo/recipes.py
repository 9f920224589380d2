"""Zoo recipes: what to build and how to train it, hashed to key the weight cache."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from rbl_core.io import sha256_json

# Bump when training code changes in a way that should invalidate cached weights.
# 2: training runs under core.training.deterministic_training() (one thread, deterministic kernels);
# weights trained before depended on the caller's torch thread count, so one hash meant several weight sets.
CACHE_FORMAT = 2


class ZooError(LookupError):
    """A model name, data set or threat model the zoo does not have."""


@dataclass(frozen=True)
class Recipe:
    """Architecture, data set, training procedure and seed of one zoo model."""

    name: str
    dataset: str
    architecture: str
    params: Mapping[str, Any] = field(default_factory=dict)
    builder: str = "robustbench_local.zoo.builders:train_recipe"
    constructor: str | None = None  # "module:function"(recipe, input_shape, num_classes) -> untrained module
    seed: int = 0
    threat_models: tuple[str, ...] = ("Linf", "L2")
    defense: str = "none"
    description: str = ""

    def hash(self) -> str:
        """SHA-256 of everything that determines the weights."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("description", "threat_models")}
        payload["cache_format"] = CACHE_FORMAT
        return sha256_json(payload)


_REGISTRY: dict[tuple[str, str], Recipe] = {}


def register_recipe(recipe: Recipe) -> None:
    """Add ``recipe`` to the zoo; a second recipe with the same (dataset, name) is an error."""
    key = (recipe.dataset, recipe.name)
    if key in _REGISTRY and _REGISTRY[key] != recipe:
        raise ZooError(f"zoo already has a different recipe for {recipe.name!r} on {recipe.dataset!r}")
    _REGISTRY[key] = recipe


def _load_recipe_modules() -> None:
    # Every robustbench_local/zoo/recipes_*.py registers its recipes on import.
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("recipes_"):
            importlib.import_module(f"robustbench_local.zoo.{info.name}")


def list_models(dataset: str | None = None) -> list[Recipe]:
    """All registered recipes, optionally only those for ``dataset``."""
    _load_recipe_modules()
    return sorted((r for r in _REGISTRY.values() if dataset in (None, r.dataset)), key=lambda r: (r.dataset, r.name))


def get_recipe(model_name: str, dataset: str, threat_model: str | None = None) -> Recipe:
    """The recipe for ``model_name`` on ``dataset``, with a clear error listing valid choices."""
    _load_recipe_modules()
    recipe = _REGISTRY.get((dataset, model_name))
    if recipe is None:
        names = sorted(n for d, n in _REGISTRY if d == dataset)
        where = sorted({d for d, n in _REGISTRY if n == model_name})
        extra = f"; {model_name!r} exists for {', '.join(where)}" if where else ""
        raise ZooError(f"no zoo model {model_name!r} for dataset {dataset!r}: choose one of {names}{extra}")
    if threat_model is not None and threat_model not in recipe.threat_models:
        raise ZooError(f"zoo model {model_name!r} on {dataset!r} is listed for threat models "
                       f"{list(recipe.threat_models)}, not {threat_model!r}")
    return recipe


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"module:function"`` (or ``"module.function"``) and return the callable."""
    module, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ZooError(f"cannot import {target!r}: {err}") from err
