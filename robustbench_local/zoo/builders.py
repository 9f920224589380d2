"""Zoo builders: turn a recipe into trained weights with the core training loop."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attacks.fooling.retraining import BuildFn, TrainFn
from rbl_core.architectures import build
from rbl_core.data import DataSplit
from rbl_core.training import train_classifier
from robustbench_local.zoo.recipes import ZooError, get_recipe


def train_recipe(recipe: Any, train: DataSplit) -> nn.Module:
    """Default zoo builder: build ``recipe.architecture`` and train it with ``recipe.params``."""
    torch.manual_seed(recipe.seed)
    model = build(recipe.architecture, train.input_shape, train.num_classes)
    params = dict(recipe.params)
    params.pop("n_train", None)
    params.pop("size", None)
    return train_classifier(model, train, seed=recipe.seed, **params)


def recipe_trainer(model_name: str, dataset: str, input_shape: tuple[int, int, int],
                   epochs: int | None = None) -> tuple[BuildFn, TrainFn]:
    """Build/train callables that reproduce a zoo recipe's architecture and training with C+1 outputs."""
    recipe = get_recipe(model_name, dataset)
    if recipe.params.get("adversarial"):
        raise ZooError(f"retraining reproduces plain (ERM) recipes only; {model_name!r} is adversarially trained")
    params = {k: v for k, v in recipe.params.items() if k not in ("n_train", "size")}
    if epochs is not None:
        params["epochs"] = int(epochs)

    def build_fn(num_classes: int) -> nn.Module:
        return build(recipe.architecture, tuple(input_shape), num_classes)

    def train_fn(model: nn.Module, data: DataSplit, seed: int) -> nn.Module:
        return train_classifier(model, data, seed=seed, progress=False, **params)

    return build_fn, train_fn
