"""Zoo recipes for contextual fusion (Akumalla, Haney, Bazhenov): two frozen streams, fused and single-stream heads.

* ``fusion_fg`` on ``mnist_scenes10``: the foreground (digit) stream, a ``cnn_small`` trained on composites
  whose scene is independent of the digit (the "ImageNet" role);
* ``fusion_bg`` on ``mnist_scenes_bg``: the background stream, a ``cnn_small`` trained to name the scene of
  composites whose digit is independent of it (the "Places" role);
* on every digit scene set (``mnist_scenes10/50/90/_var``): ``fusion`` (linear head on both frozen streams'
  features, CE), ``fusion_reg`` (CE + alpha ||theta_fg||^2, alpha 0.03), ``fg_only`` (the fg stream as it is)
  and ``bg_only`` (a linear digit head on the frozen scene features).

The heads train on the set's train images the streams never saw (``train[stream n_train:]``), so a head does
not learn to trust features that are over-confident on the streams' own training digits. A head recipe carries
its streams' full recipes in ``params`` (like DVERGE's baseline), so changing a stream changes every hash above it.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from defenses.contextual_fusion.model import FusionModel, LinearOnFeatures
from defenses.contextual_fusion.training import Streams, split_classifier, train_bg_only, train_fusion
from rbl_core.architectures import build
from rbl_core.data import DataSplit
from robustbench_local.data_scenes import DIGIT_SCENE_SETS
from robustbench_local.zoo.cache import load_or_train
from robustbench_local.zoo.recipes import Recipe, register_recipe

_HERE = "robustbench_local.zoo.recipes_fusion"
STREAM_PARAMS = dict(epochs=5, lr=3e-3, batch_size=128, n_train=5000)


def stream_recipes(n_train: int = 5000, epochs: int = 5, seed: int = 0) -> tuple[Recipe, Recipe]:
    """The fg (digit) and bg (scene) stream recipes; the defaults are the registered ``fusion_fg`` / ``fusion_bg``."""
    params = dict(STREAM_PARAMS, n_train=int(n_train), epochs=int(epochs))
    fg = Recipe("fusion_fg", "mnist_scenes10", "cnn_small", params, seed=2 * seed, threat_models=("Linf",),
                description="contextual fusion: foreground (digit) stream on chance composites")
    bg = Recipe("fusion_bg", "mnist_scenes_bg", "cnn_small", params, seed=2 * seed + 1, threat_models=("Linf",),
                description="contextual fusion: background stream; names the scene, not the digit")
    return fg, bg


FG_STREAM, BG_STREAM = stream_recipes()
DEFAULT_ALPHA = 0.03
HEAD_STEPS = 300
KINDS = ("fusion", "fg_only", "bg_only")


def _stream_spec(recipe: Recipe) -> dict:
    return {k: v for k, v in asdict(recipe).items() if k not in ("description", "threat_models")}


def _stream(spec: dict) -> Recipe:
    return Recipe(**{**spec, "params": dict(spec["params"])})


def head_recipe(kind: str, dataset: str, *, alpha: float = 0.0, head_steps: int = HEAD_STEPS,
                fg: Recipe = FG_STREAM, bg: Recipe = BG_STREAM, name: str | None = None) -> Recipe:
    """The ``kind`` ("fusion", "fg_only" or "bg_only") model on ``dataset`` over streams ``fg`` and ``bg``."""
    if kind not in KINDS:
        raise ValueError(f"head_recipe: kind must be one of {KINDS}, got {kind!r}")
    params: dict[str, Any] = {"fg": _stream_spec(fg)}
    if kind != "fg_only":
        params.update(bg=_stream_spec(bg), head_steps=int(head_steps))
    if kind == "fusion":
        params["alpha"] = float(alpha)
    what = {"fusion": f"fused head on frozen fg + bg streams, alpha={alpha:g}",
            "fg_only": "the frozen foreground stream alone", "bg_only": "linear digit head on frozen scene features"}
    return Recipe(name or kind, dataset, f"{kind}_cnn_small", params, builder=f"{_HERE}:build_{kind}",
                  constructor=f"{_HERE}:construct_{kind}", threat_models=("Linf",),
                  defense="contextual_fusion" if kind == "fusion" else "none",
                  description=f"contextual fusion: {what[kind]}")


def _split(recipe_spec: dict) -> LinearOnFeatures:
    return split_classifier(load_or_train(_stream(recipe_spec)))


def _head_data(recipe: Any, train: DataSplit) -> DataSplit:
    # The train images after those the streams trained on (every scene set composites the same MNIST split).
    start = int(recipe.params["fg"]["params"].get("n_train") or 0)
    if start >= len(train):
        raise ValueError(f"recipe {recipe.name!r}: the streams used all {len(train)} train images; none are left "
                         "for the head")
    return DataSplit(train.x[start:], train.y[start:], train.num_classes, train.name, "train", train.class_names)


def construct_fusion(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> FusionModel:
    """Untrained fused model: two ``cnn_small`` feature stacks and a linear head (zoo constructor)."""
    fg = split_classifier(build("cnn_small", input_shape, num_classes))
    bg = split_classifier(build("cnn_small", input_shape, num_classes))
    fg_dim = fg.head.in_features
    return FusionModel(fg.features, bg.features, nn.Linear(fg_dim + bg.head.in_features, num_classes), fg_dim=fg_dim)


def construct_fg_only(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Untrained fg stream, a plain ``cnn_small`` (zoo constructor)."""
    return build("cnn_small", input_shape, num_classes)


def construct_bg_only(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> LinearOnFeatures:
    """Untrained bg-only model: a ``cnn_small`` feature stack and a linear digit head (zoo constructor)."""
    bg = split_classifier(build("cnn_small", input_shape, num_classes))
    return LinearOnFeatures(bg.features, nn.Linear(bg.head.in_features, num_classes))


def build_fusion(recipe: Any, train: DataSplit) -> FusionModel:
    """Zoo builder: load (or train) both streams, then fit the head with CE + alpha ||theta_fg||^2."""
    data = _head_data(recipe, train)
    streams = Streams(_split(recipe.params["fg"]), _split(recipe.params["bg"]))
    return train_fusion(streams, data.x, data.y, alpha=float(recipe.params["alpha"]), seed=recipe.seed,
                        steps=int(recipe.params["head_steps"]))


def build_fg_only(recipe: Any, train: DataSplit) -> nn.Module:
    """Zoo builder: the fg stream itself, as a model of this data set."""
    return load_or_train(_stream(recipe.params["fg"]))


def build_bg_only(recipe: Any, train: DataSplit) -> LinearOnFeatures:
    """Zoo builder: a linear digit head on the frozen scene features."""
    # Only the scene stream: the fg stream plays no part in this model.
    data = _head_data(recipe, train)
    return train_bg_only(_split(recipe.params["bg"]), data.x, data.y, seed=recipe.seed,
                         steps=int(recipe.params["head_steps"]))


for _recipe in (FG_STREAM, BG_STREAM):
    register_recipe(_recipe)
for _dataset in DIGIT_SCENE_SETS:
    register_recipe(head_recipe("fusion", _dataset))
    register_recipe(head_recipe("fusion", _dataset, alpha=DEFAULT_ALPHA, name="fusion_reg"))
    register_recipe(head_recipe("fg_only", _dataset))
    register_recipe(head_recipe("bg_only", _dataset))
