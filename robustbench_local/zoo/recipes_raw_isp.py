"""Zoo recipes of the RAW defense (Zhang, Dong, Heide 2022): F (RGB -> RAW) and G (RAW -> RGB) per RGB data set.

Both train on the data set's own train split pushed through the synthetic camera
(``defenses.raw_isp.camera``, default parameters, recorded in the recipe so a change retrains), with the
settings of ``_F`` and ``_G``: far fewer images and epochs than the paper's 100 / 10 epochs on 46,839 Zurich
pairs, sized for a CPU. ``small_cnn`` (cnn_bn_small) is the study's classifier on both sets: on CIFAR-10 it is
more accurate than ``standard_cnn`` on the 4,660-image subset (66 % vs 57 % on 500 test images) and ~13x cheaper.
``test_raw_isp_f`` / ``_g`` (CIFAR-10) are the tests' shorter-trained pair.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from defenses.raw_isp.camera import CameraParams, SyntheticCamera
from defenses.raw_isp.operators import RawToRGB, RGBToRaw
from defenses.raw_isp.training import OperatorTraining, train_f, train_g
from robustbench_local.zoo.recipes import Recipe, register_recipe

RAW_DATASETS = ("cifar10", "gtsrb")
_CAMERA = asdict(CameraParams())
# 4,660 images = the whole CIFAR-10 train subset; GTSRB takes as many of its 10,000 (same cost).
_F = dict(n_train=4660, epochs=10, lr=2e-3, batch_size=32, noise_sigma=0.1, width=32, depth=3, camera=_CAMERA)
_G = dict(n_train=4660, epochs=16, lr=2e-3, batch_size=32, width=32, camera=_CAMERA)
# The tests' pair (``operators=test_raw_isp``, CIFAR-10 only): the same training with 4 / 6 epochs instead of
# 10 / 16, ~40 % of the cost, so a cold test run does not spend ~5 min on F and G. The weights the docs' study
# quotes stay those of _F and _G (measured for both pairs: docs/raw_isp.md, tests/test_raw_isp.py).
_F_TEST = dict(_F, epochs=4)
_G_TEST = dict(_G, epochs=6)
_TRAIN_KEYS = ("epochs", "lr", "batch_size", "noise_sigma")


def _camera(recipe: Any) -> SyntheticCamera:
    params = dict(recipe.params["camera"])
    params["ccm"] = tuple(tuple(row) for row in params["ccm"])
    return SyntheticCamera(CameraParams(**params))


def _training(recipe: Any) -> OperatorTraining:
    return OperatorTraining(seed=recipe.seed, **{k: recipe.params[k] for k in _TRAIN_KEYS if k in recipe.params})


def construct_f(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Untrained F of the recipe's width and depth (zoo constructor; ``num_classes`` is unused)."""
    return RGBToRaw(width=int(recipe.params["width"]), depth=int(recipe.params["depth"]))


def construct_g(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Untrained G of the recipe's width (zoo constructor)."""
    return RawToRGB(width=int(recipe.params["width"]))


def build_f(recipe: Any, train: Any) -> nn.Module:
    """Zoo builder: F trained with the noise-augmented loss on the camera RAW of the train images."""
    torch.manual_seed(recipe.seed)
    return train_f(construct_f(recipe, train.input_shape, 0), train.x, _camera(recipe), _training(recipe))


def build_g(recipe: Any, train: Any) -> nn.Module:
    """Zoo builder: G trained on the camera's noisy RAW of clean train images (MSE)."""
    torch.manual_seed(recipe.seed)
    return train_g(construct_g(recipe, train.input_shape, 0), train.x, _camera(recipe), _training(recipe))


def _recipes() -> list[Recipe]:
    here = "robustbench_local.zoo.recipes_raw_isp"
    out = [Recipe("small_cnn", "cifar10", "cnn_bn_small", dict(epochs=15, lr=0.05, batch_size=128, optimizer="sgd",
                                                                weight_decay=5e-4, augment=True),
                  description="small BatchNorm CNN (16-32-64), the RAW-defense study's classifier"),
           Recipe("small_cnn", "gtsrb", "cnn_bn_small", dict(epochs=8, lr=3e-3, batch_size=128),
                  description="small BatchNorm CNN (16-32-64), the RAW-defense study's classifier")]
    for ds in RAW_DATASETS:
        out.append(Recipe("raw_isp_f", ds, "raw_f", _F, builder=f"{here}:build_f", constructor=f"{here}:construct_f",
                          threat_models=(), defense="raw_isp", description="F: RGB -> packed RAW (noise-augmented)"))
        out.append(Recipe("raw_isp_g", ds, "raw_g", _G, builder=f"{here}:build_g", constructor=f"{here}:construct_g",
                          threat_models=(), defense="raw_isp", description="G: packed RAW -> RGB U-Net (clean MSE)"))
    out.append(Recipe("test_raw_isp_f", "cifar10", "raw_f", _F_TEST, builder=f"{here}:build_f",
                      constructor=f"{here}:construct_f", threat_models=(), defense="raw_isp",
                      description="the tests' F: raw_isp_f on fewer images and epochs"))
    out.append(Recipe("test_raw_isp_g", "cifar10", "raw_g", _G_TEST, builder=f"{here}:build_g",
                      constructor=f"{here}:construct_g", threat_models=(), defense="raw_isp",
                      description="the tests' G: raw_isp_g on fewer images and epochs"))
    return out


for _recipe in _recipes():
    register_recipe(_recipe)
