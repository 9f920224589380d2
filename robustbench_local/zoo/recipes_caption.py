"""Zoo recipes of the two CNN-RNN captioners on each caption set (the victims of ``task=caption_attack``).

* ``caption_attn_gru``: conv encoder (grid C x H/4 x W/4) + GRU decoder with additive attention over the grid;
* ``caption_flat_lstm``: 5x5 conv + max-pool encoder (grid C x H/8 x W/8), flattened into an LSTM's initial state
  and per-step context.

Different encoders and decoders, so adversarial images crafted on one and read by the other measure transfer.
Both pretrain their encoder to name each object (a linear probe; the stand-in for an ImageNet-pretrained CNN),
then train end to end with teacher-forced cross-entropy (``attacks.caption.captioner.train_captioner``).

On ``mnist_captions`` (16 x 48 digits): the default widths, 3 + 10 epochs on the first 4,000 train scenes. On
``cifar_captions`` (32 x 96 photos) both start from the conv trunk of the zoo's CIFAR-10 classifier ``small_cnn``
(16-32-64 channels, a max-pool after each: grid 64 x 4 x 12), the stand-in for the ImageNet-pretrained CNN of real
captioners, fine-tuned end to end; the flat LSTM adds its own conv stage (grid 64 x 2 x 6). Encoders trained from
scratch on these scenes (with the probe pretraining that serves MNIST) did not learn to name CIFAR objects in a
few CPU minutes (0 % exact match; docs/caption_attack.md).
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from attacks.caption.captioner import Captioner, build_captioner, train_captioner
from rbl_core.architectures import build as build_architecture
from rbl_core.data import DataSplit
from robustbench_local.data_captions import CAPTION_SPECS
from robustbench_local.zoo.recipes import Recipe, register_recipe

_HERE = "robustbench_local.zoo.recipes_caption"
_TRAIN = dict(pretrain_epochs=3, epochs=10, lr=2e-3, batch_size=64, n_train=4000)
# natural images: a pretrained classifier trunk instead of probe pretraining
_NATURAL = dict(pretrain_epochs=0, epochs=5, lr=2e-3, batch_size=64, n_train=4000, backbone="small_cnn")
NATURAL_SIZES = {"attention_gru": {}, "flat_lstm": dict(widths=[24, 48, 64])}
BACKBONE_DATASET = "cifar10"


def trunk(classifier: nn.Module) -> nn.Module:
    """The conv trunk of a ``cnn_bn_small`` classifier: everything before its Flatten and Linear."""
    return copy.deepcopy(classifier[:-2])


def _build(recipe: Any, pretrained: bool) -> Captioner:
    spec = CAPTION_SPECS[recipe.dataset][0]
    sizes = dict(recipe.params.get("sizes", {}))
    name = recipe.params.get("backbone")
    if name:
        if pretrained:   # training: the zoo classifier's weights (trained and cached on first use)
            # deferred: the zoo package imports this module while it registers recipes
            from robustbench_local.zoo import load_model
            classifier = load_model(name, BACKBONE_DATASET, threat_model=None)
        else:            # loading a cached captioner: its own weights replace these
            classifier = build_architecture("cnn_bn_small", (3, 32, 32), 10)
        sizes["backbone"] = trunk(classifier)
    return build_captioner(recipe.architecture, spec.grammar, spec.shape, **sizes)


def construct_captioner(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> Captioner:
    """Untrained captioner of the recipe's architecture for its caption set (zoo constructor)."""
    return _build(recipe, pretrained=False)


def build_captioner_recipe(recipe: Any, train: DataSplit) -> Captioner:
    """Zoo builder: teacher-forced training on the train scenes (``train.y`` holds token ids)."""
    p = recipe.params
    return train_captioner(_build(recipe, pretrained=True), train.x, train.y, epochs=int(p["epochs"]),
                           lr=float(p["lr"]), batch_size=int(p["batch_size"]), seed=recipe.seed,
                           pretrain_epochs=int(p["pretrain_epochs"]))


def _recipes(dataset: str, train: dict, sized: bool) -> tuple[Recipe, ...]:
    def params(arch: str) -> dict:
        return {**train, "sizes": NATURAL_SIZES[arch]} if sized and NATURAL_SIZES[arch] else train

    return (
        Recipe("caption_attn_gru", dataset, "attention_gru", params("attention_gru"),
               builder=f"{_HERE}:build_captioner_recipe", constructor=f"{_HERE}:construct_captioner", seed=0,
               threat_models=("Linf",), description="captioner: conv grid + attention GRU decoder"),
        Recipe("caption_flat_lstm", dataset, "flat_lstm", params("flat_lstm"),
               builder=f"{_HERE}:build_captioner_recipe", constructor=f"{_HERE}:construct_captioner", seed=1,
               threat_models=("Linf",), description="captioner: conv + max-pool grid, flattened into an LSTM decoder"),
    )


CAPTIONERS = _recipes("mnist_captions", _TRAIN, sized=False) + _recipes("cifar_captions", _NATURAL, sized=True)
for _recipe in CAPTIONERS:
    register_recipe(_recipe)
