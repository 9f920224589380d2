"""The captioning data sets: scenes of 2-3 real objects with grammar captions (``mnist_captions``, ``cifar_captions``).

* ``mnist_captions``: 2-3 coloured MNIST digits in a row on a black 3 x 16 x 48 canvas, from the harness's MNIST
  ``train`` / ``test`` split (carved from t10k, see :mod:`data`);
* ``cifar_captions``: 2-3 whole CIFAR-10 photos (32 x 32) in a 1 x 3 row on a grey 3 x 32 x 96 canvas, from
  the harness's CIFAR-10 ``train`` split (4,660 exact training images) for train scenes and its ``test`` split
  (the 846 exact test images) for test scenes.

Both are built by :func:`attacks.caption.scenes.make_caption_scenes` with a fixed seed per split (a name always
means the same scenes), and the two splits share no source image. As a :class:`DataSplit` their ``y`` holds token
ids (N, max_len), not class labels, and their ``class_names`` are the vocabulary: only captioners
(``recipes_caption``) and ``task=caption_attack`` read them.
"""
from __future__ import annotations

from attacks.caption.grammar import CaptionGrammar
from attacks.caption.scenes import CIFAR_SPEC, MNIST_SPEC, CaptionScenes, SceneSpec, make_caption_scenes
from rbl_core.data import DataSplit
from robustbench_local.data_scenes import check_composed_split

# caption set -> (scene spec, the data set its objects come from)
CAPTION_SPECS: dict[str, tuple[SceneSpec, str]] = {"mnist_captions": (MNIST_SPEC, "mnist"),
                                                   "cifar_captions": (CIFAR_SPEC, "cifar10")}
CAPTION_SETS = tuple(CAPTION_SPECS)
SIZES = {"train": 6000, "test": 1000}    # scenes per split
SEEDS = {"mnist_captions": {"train": 1100, "test": 1201}, "cifar_captions": {"train": 2100, "test": 2201}}


def caption_grammar(name: str) -> CaptionGrammar:
    """The caption grammar (vocabulary) of caption set ``name``."""
    check_composed_split("caption set", name, CAPTION_SETS, "test")
    return CAPTION_SPECS[name][0].grammar


def load_caption_scenes(name: str, split: str, sources: DataSplit) -> CaptionScenes:
    """Every scene of caption set ``name`` drawn on ``sources`` (the source set's ``split``), objects included."""
    check_composed_split("caption set", name, CAPTION_SETS, split)
    return make_caption_scenes(sources, SIZES[split], seed=SEEDS[name][split], spec=CAPTION_SPECS[name][0])


def caption_split(name: str, split: str, sources: DataSplit) -> DataSplit:
    """Caption set ``name`` as a ``DataSplit``: images and token ids."""
    return load_caption_scenes(name, split, sources).split(name, split)
