"""Zoo recipes for DVERGE (Yang et al., NeurIPS 2020): baseline and DVERGE ensembles of 3 and 5 small CNNs.

Every DVERGE ensemble starts from the baseline ensemble of the same size (the reference warm-starts
from a trained baseline, ``--start-from baseline``); ``load_model`` trains and caches the baseline
first. ``surrogate_ens*`` are independently trained baseline ensembles (other seeds) that the
black-box transfer attacks are crafted on. Defaults are the reference settings scaled to CPU:
distillation eps/step/steps 0.35/0.035/10 (MNIST) and 0.07/0.007/10 (CIFAR-10), layer re-drawn
every epoch, SGD with momentum 0.9, wd 1e-4, x0.1 decays at 1/2 and 3/4 of training; far fewer
epochs and images (see ``_DVERGE``).
"""
from __future__ import annotations

from typing import Any

import torch

from defenses.dverge.ensemble import Ensemble
from defenses.dverge.training import DvergeConfig, dverge_from_baseline, member_seeds
from rbl_core.architectures import build
from rbl_core.training import train_classifier
from robustbench_local.zoo.cache import load_or_train
from robustbench_local.zoo.recipes import Recipe, get_recipe, register_recipe

BASELINE_BUILDER = "robustbench_local.zoo.recipes_dverge:build_baseline_ensemble"
DVERGE_BUILDER = "robustbench_local.zoo.recipes_dverge:build_dverge_ensemble"
ENSEMBLE_CONSTRUCTOR = "robustbench_local.zoo.recipes_dverge:construct_ensemble"

# Member training of the baseline ensembles: the zoo's plain-CNN settings per data set.
_BASE = {
    "mnist": dict(epochs=6, lr=3e-3, batch_size=128),
    "cifar10": dict(epochs=10, lr=0.05, batch_size=128, optimizer="sgd", weight_decay=5e-4, augment=True),
}
# DVERGE cross-training (reference: 120 epochs lr 0.001 on MNIST, 200 epochs lr 0.1 on CIFAR-10).
# CPU scaling: the warm start uses the baseline trained on the whole train split, DVERGE then runs
# on its first 2,000 images for 3 epochs (each batch costs K x 10 distillation steps + K(K-1) passes).
_DVERGE = {
    "mnist": dict(n_train=2000, epochs=3, lr=0.01, batch_size=128, distill_eps=0.35, distill_step_size=0.035,
                  distill_steps=10),
    "cifar10": dict(n_train=2000, epochs=3, lr=0.01, batch_size=128, distill_eps=0.07, distill_step_size=0.007,
                    distill_steps=10, augment=True),
}
SURROGATE_SEEDS = {3: 101, 5: 102}


def baseline_params(dataset: str, members: int) -> dict:
    """Parameters of the baseline ensemble of ``members`` small CNNs on ``dataset``."""
    return dict(members=members, average="prob", **_BASE[dataset])


def dverge_params(dataset: str, members: int, **overrides) -> dict:
    """Parameters of the DVERGE ensemble warm-started from ``baseline_ens{members}_cnn``."""
    return dict(members=members, average="prob", baseline=f"baseline_ens{members}_cnn",
                baseline_params=baseline_params(dataset, members), **{**_DVERGE[dataset], **overrides})


# ---- builders and the constructor the recipes below name ----

_ENSEMBLE_KEYS = ("members", "average")


def construct_ensemble(recipe: Any, input_shape: tuple[int, int, int], num_classes: int) -> Ensemble:
    """Untrained ensemble of ``params['members']`` copies of ``recipe.architecture`` (zoo constructor)."""
    k = int(recipe.params.get("members", 3))
    if k < 1:
        raise ValueError(f"recipe {recipe.name!r}: params['members'] must be >= 1, got {k}")
    members = []
    for s in member_seeds(recipe.seed, k):
        torch.manual_seed(s)
        members.append(build(recipe.architecture, input_shape, num_classes))
    return Ensemble(members, average=recipe.params.get("average", "prob"))


def build_baseline_ensemble(recipe: Any, train: Any) -> Ensemble:
    """Zoo builder: train each member independently by ERM (zoo ``train_classifier``), own init seed."""
    ens = construct_ensemble(recipe, train.input_shape, train.num_classes)
    params = {k: v for k, v in recipe.params.items() if k not in _ENSEMBLE_KEYS + ("n_train", "size")}
    for member, s in zip(ens.members, member_seeds(recipe.seed, len(ens))):
        train_classifier(member, train, seed=s, **params)
    return ens.eval()


def build_dverge_ensemble(recipe: Any, train: Any) -> Ensemble:
    """Zoo builder: load (or train) the baseline ensemble named in ``params['baseline']``, then DVERGE-train it."""
    params = dict(recipe.params)
    for key in ("baseline", "baseline_params"):
        if key not in params:
            raise KeyError(f"DVERGE recipe {recipe.name!r} needs params[{key!r}] (the baseline it starts from)")
    base = get_recipe(params.pop("baseline"), recipe.dataset, None)
    if dict(base.params) != dict(params.pop("baseline_params")):
        raise ValueError(f"DVERGE recipe {recipe.name!r}: baseline_params differ from recipe {base.name!r}'s params")
    baseline = load_or_train(base)
    if not isinstance(baseline, Ensemble) or len(baseline) != int(params.get("members", 3)):
        raise ValueError(f"baseline {base.name!r} is not an ensemble of {params.get('members', 3)} members")
    for key in _ENSEMBLE_KEYS + ("n_train", "size"):
        params.pop(key, None)
    cfg = DvergeConfig.from_params({"seed": recipe.seed, **params})
    model, _ = dverge_from_baseline(baseline, train.x, train.y, cfg)
    return model.eval()


def _recipes() -> list[Recipe]:
    out = []
    for ds in ("mnist", "cifar10"):
        for k in (3, 5):
            common = dict(dataset=ds, architecture="cnn_small", constructor=ENSEMBLE_CONSTRUCTOR,
                          threat_models=("Linf",))
            out.append(Recipe(f"baseline_ens{k}_cnn", params=baseline_params(ds, k), builder=BASELINE_BUILDER,
                              defense="ensemble", description=f"baseline ensemble of {k} small CNNs (prob. average)",
                              **common))
            out.append(Recipe(f"surrogate_ens{k}_cnn", params=baseline_params(ds, k), builder=BASELINE_BUILDER,
                              seed=SURROGATE_SEEDS[k], defense="ensemble",
                              description=f"hold-out baseline ensemble of {k} CNNs, surrogate for transfer attacks",
                              **common))
            out.append(Recipe(f"dverge_ens{k}_cnn", params=dverge_params(ds, k), builder=DVERGE_BUILDER,
                              defense="dverge", description=f"DVERGE ensemble of {k} small CNNs", **common))
        out.append(Recipe("dverge_plus_ens3_cnn", params=dverge_params(ds, 3, plus_clean=True), builder=DVERGE_BUILDER,
                          defense="dverge_plus", description="DVERGE+ (cross-training + clean loss), 3 CNNs",
                          **dict(dataset=ds, architecture="cnn_small", constructor=ENSEMBLE_CONSTRUCTOR,
                                 threat_models=("Linf",))))
    return out


for _recipe in _recipes():
    register_recipe(_recipe)
