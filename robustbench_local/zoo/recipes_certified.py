"""Certified-trained zoo recipes: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020) on digits and MNIST.

The loss and its schedule are :class:`verify.certified_training.CertifiedLoss`: clean warm-up at
eps 0, then a linear ramp of eps, of the clean-loss weight kappa (1 -> ``kappa_end``) and, for
CROWN-IBP, of the CROWN-IBP weight beta (1 -> 0); the core training loop runs it as ``loss_fn``.
The models are the zoo's ReLU architectures without BatchNorm or pooling (``cnn_small`` on
8x8 digits, the IBP paper's strided ``cnn_strided`` on MNIST), so the verifier can certify them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rbl_core.architectures import build
from rbl_core.training import train_classifier
from robustbench_local.zoo.recipes import Recipe, register_recipe
from verify.certified_training import CertifiedLoss

_LOSS_KEYS = ("method", "eps", "warmup", "ramp")
_HERE = "robustbench_local.zoo.recipes_certified:train_certified"


def train_certified(recipe: Any, train: Any) -> nn.Module:
    """Zoo builder: the recipe's architecture trained on the IBP / CROWN-IBP loss of ``recipe.params``."""
    torch.manual_seed(recipe.seed)
    model = build(recipe.architecture, train.input_shape, train.num_classes)
    params = dict(recipe.params)
    loss = CertifiedLoss(num_classes=train.num_classes, kappa=(1.0, params.pop("kappa_end")),
                         **{k: params.pop(k) for k in _LOSS_KEYS})
    return train_classifier(model, train, seed=recipe.seed, loss_fn=loss, **params)


_DIGITS = dict(epochs=40, lr=3e-3, batch_size=64, eps=0.1, warmup=0.1, ramp=0.5, kappa_end=0.5)
_MNIST = dict(epochs=10, lr=1e-3, batch_size=128, eps=0.2, warmup=0.1, ramp=0.5, kappa_end=0.5)

_RECIPES = [
    Recipe("ibp_cnn", "digits", "cnn_small", dict(_DIGITS, method="ibp"), builder=_HERE, threat_models=("Linf",),
           defense="ibp", description="IBP certified training, Linf eps 0.1 (ramped)"),
    Recipe("crown_ibp_cnn", "digits", "cnn_small", dict(_DIGITS, epochs=20, method="crown_ibp", kappa_end=0.0),
           builder=_HERE,
           threat_models=("Linf",), defense="crown_ibp", description="CROWN-IBP certified training, Linf eps 0.1"),
    Recipe("ibp_cnn", "mnist", "cnn_strided", dict(_MNIST, method="ibp"), builder=_HERE, threat_models=("Linf",),
           defense="ibp", description="IBP certified training (IBP-paper small CNN), Linf eps 0.2 (ramped)"),
    Recipe("crown_ibp_cnn", "mnist", "cnn_strided", dict(_MNIST, method="crown_ibp", kappa_end=0.0), builder=_HERE,
           threat_models=("Linf",), defense="crown_ibp", description="CROWN-IBP certified training, Linf eps 0.2"),
    # the same architecture trained plainly: the fair baseline for the certified accuracy on MNIST
    Recipe("standard_cnn_strided", "mnist", "cnn_strided", dict(epochs=10, lr=1e-3, batch_size=128),
           description="plain strided CNN (the certified recipes' architecture)"),
]

for _recipe in _RECIPES:
    register_recipe(_recipe)
