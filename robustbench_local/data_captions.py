"""The captioning data set ``mnist_captions``: scenes of 2-3 coloured real MNIST digits with grammar captions.

Built by :func:`attacks.caption.scenes.make_caption_scenes` from the harness's MNIST ``train`` / ``test`` split
(carved from t10k, see :mod:`data`, so the two splits share no source image), with a fixed seed per split: a
name always means the same scenes. As a :class:`DataSplit` its ``y`` holds token ids (N, MAX_LEN), not class
labels, and its ``class_names`` are the vocabulary: only captioners (``recipes_caption``) and
``task=caption_attack`` read it.
"""
from __future__ import annotations

from attacks.caption.scenes import CaptionScenes, make_caption_scenes
from rbl_core.data import DataSplit
from robustbench_local.data_scenes import check_composed_split

CAPTION_SETS = ("mnist_captions",)
SIZES = {"train": 6000, "test": 1000}    # scenes per split
SEEDS = {"train": 1100, "test": 1201}


def load_caption_scenes(name: str, split: str, digits: DataSplit) -> CaptionScenes:
    """Every scene of caption set ``name`` drawn on ``digits`` (the MNIST ``split``), objects included."""
    check_composed_split("caption set", name, CAPTION_SETS, split)
    return make_caption_scenes(digits, SIZES[split], seed=SEEDS[split])


def caption_split(name: str, split: str, digits: DataSplit) -> DataSplit:
    """Caption set ``name`` as a ``DataSplit``: images and token ids."""
    return load_caption_scenes(name, split, digits).split(name, split)
