"""Object-on-scene data sets built from real MNIST digits (contextual fusion), as built-in data sets.

Each set composites the harness's MNIST ``train`` / ``test`` split (carved from t10k, see :mod:`data`) onto
procedural texture scenes with :func:`defenses.contextual_fusion.scenes.make_scenes`, with its own fixed seed
per split, so a name always means the same images. The scene class equals the digit with probability ``p``:

* ``mnist_scenes10`` (p = 0.1, chance: the negative control), ``mnist_scenes50``, ``mnist_scenes90``;
* ``mnist_scenes_var``: a different p per digit class (context variability varies across classes);
* ``mnist_scenes_bg``: chance composites labelled by their *scene*, the background stream's training set.

The digit sets are labelled by digit. The other views (isolated digit, isolated scene, digit mask) come from
:func:`load_scenes`.
"""
from __future__ import annotations

from dataclasses import dataclass

from defenses.contextual_fusion.scenes import SCENE_NAMES, Scenes, make_scenes
from rbl_core.data import DataError, DataSplit


@dataclass(frozen=True)
class SceneSet:
    """How one named set is drawn: scene/label correlation, seed, and which label it is classified by."""

    p: float | tuple[float, ...]
    seed: int
    label: str = "y"   # "y" (digit) or "scene"


# Per-class p of mnist_scenes_var: a shuffled spread from 0.1 to 1.0, so p is not ordered like the digits.
VARIABLE_P = (0.5, 1.0, 0.2, 0.8, 0.1, 0.9, 0.3, 0.7, 0.4, 0.6)
SCENE_SETS = {
    "mnist_scenes10": SceneSet(0.1, 10),
    "mnist_scenes50": SceneSet(0.5, 50),
    "mnist_scenes90": SceneSet(0.9, 90),
    "mnist_scenes_var": SceneSet(VARIABLE_P, 200),
    "mnist_scenes_bg": SceneSet(0.1, 300, label="scene"),
}
DIGIT_SCENE_SETS = tuple(name for name, spec in SCENE_SETS.items() if spec.label == "y")
SPLIT_OFFSET = {"train": 0, "test": 1}


def check_composed_split(what: str, name: str, known: object, split: str) -> None:
    """Raise DataError unless ``name`` is one of the ``known`` sets of ``what`` and ``split`` is train or test."""
    if name not in known:
        raise DataError(f"unknown {what} {name!r}: choose one of {', '.join(known)}")
    if split not in SPLIT_OFFSET:
        raise DataError(f"{name}: unknown split {split!r}: choose train or test")


def load_scenes(name: str, split: str, digits: DataSplit) -> Scenes:
    """Every view of scene set ``name`` drawn on ``digits`` (the MNIST ``split``) with the set's own seed."""
    check_composed_split("scene set", name, SCENE_SETS, split)
    spec = SCENE_SETS[name]
    return make_scenes(digits, spec.p, seed=spec.seed * 10 + SPLIT_OFFSET[split])


def scene_split(name: str, split: str, digits: DataSplit) -> DataSplit:
    """Scene set ``name`` as a classification split: composites with the set's label (digit or scene)."""
    scenes = load_scenes(name, split, digits)
    spec = SCENE_SETS[name]
    classes = SCENE_NAMES if spec.label == "scene" else digits.class_names
    return DataSplit(scenes.composite, getattr(scenes, spec.label), 10, name, split, tuple(classes))

