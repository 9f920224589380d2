"""Zoo recipes of the two CNN-RNN captioners on ``mnist_captions`` (the victims of ``task=caption_attack``).

* ``caption_attn_gru``: conv encoder (grid 64 x 4 x 12) + GRU decoder with additive attention over the grid;
* ``caption_flat_lstm``: 5x5 conv + max-pool encoder (grid 32 x 2 x 6), flattened into an LSTM's initial state
  and per-step context.

Different encoders and decoders, so adversarial images crafted on one and read by the other measure transfer.
Both pretrain their encoder to name each object's colour and digit (the stand-in for an ImageNet-pretrained CNN),
then train end to end with teacher-forced cross-entropy (``attacks.caption.captioner.train_captioner``) on the
first 4,000 train scenes.
"""
from __future__ import annotations

from typing import Any

from attacks.caption.captioner import Captioner, build_captioner, train_captioner
from rbl_core.data import DataSplit
from robustbench_local.zoo.recipes import Recipe, register_recipe

_HERE = "robustbench_local.zoo.recipes_caption"
DATASET = "mnist_captions"
_TRAIN = dict(pretrain_epochs=3, epochs=10, lr=2e-3, batch_size=64, n_train=4000)


def construct_captioner(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> Captioner:
    """Untrained captioner of the recipe's architecture (zoo constructor)."""
    return build_captioner(recipe.architecture)


def build_captioner_recipe(recipe: Any, train: DataSplit) -> Captioner:
    """Zoo builder: teacher-forced training on the train scenes (``train.y`` holds token ids)."""
    p = recipe.params
    return train_captioner(build_captioner(recipe.architecture), train.x, train.y, epochs=int(p["epochs"]),
                           lr=float(p["lr"]), batch_size=int(p["batch_size"]), seed=recipe.seed,
                           pretrain_epochs=int(p["pretrain_epochs"]))


CAPTIONERS = (
    Recipe("caption_attn_gru", DATASET, "attention_gru", _TRAIN, builder=f"{_HERE}:build_captioner_recipe",
           constructor=f"{_HERE}:construct_captioner", seed=0, threat_models=("Linf",),
           description="captioner: conv grid + attention GRU decoder"),
    Recipe("caption_flat_lstm", DATASET, "flat_lstm", _TRAIN, builder=f"{_HERE}:build_captioner_recipe",
           constructor=f"{_HERE}:construct_captioner", seed=1, threat_models=("Linf",),
           description="captioner: conv + max-pool grid, flattened into an LSTM decoder"),
)
for _recipe in CAPTIONERS:
    register_recipe(_recipe)
