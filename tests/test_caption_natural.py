"""The caption attack on natural-image scenes (``cifar_captions``): the data set, a test-sized captioner, the eps trend.

The zoo recipes take minutes on one core, so these tests train a test-sized attention captioner once per module:
the recipe's architecture on a test-sized backbone (the ``small_cnn`` trunk trained 3 epochs as a CIFAR-10
classifier instead of 15), fewer scenes and epochs; thresholds come from measured values (in comments).
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from attacks.caption.baselines import pgd_feature
from attacks.caption.captioner import build_captioner, train_captioner
from attacks.caption.evaluation import CaptionTarget, greedy_captions, score_attack
from attacks.caption.metrics import bleu4
from attacks.caption.scenes import CIFAR_SPEC
from robustbench_local.data import load_dataset
from robustbench_local.data_captions import load_caption_scenes
from rbl_core.architectures import build as build_architecture
from rbl_core.training import train_classifier
from robustbench_local.zoo.recipes_caption import NATURAL_SIZES, trunk

GRAMMAR = CIFAR_SPEC.grammar
N_TRAIN, N_EVAL, N_SRC = 1500, 200, 24


@pytest.fixture(scope="module")
def cifar():
    return load_dataset("cifar10", "train"), load_dataset("cifar10", "test")


@pytest.fixture(scope="module")
def scenes(cifar):
    return load_caption_scenes("cifar_captions", "train", cifar[0]), load_caption_scenes("cifar_captions", "test", cifar[1])


@pytest.fixture(scope="module")
def captioner(cifar, scenes):
    train = scenes[0]
    torch.manual_seed(0)
    classifier = train_classifier(build_architecture("cnn_bn_small", (3, 32, 32), 10), cifar[0], epochs=3, lr=3e-3,
                                  batch_size=128, seed=0, progress=False)
    model = build_captioner("attention_gru", GRAMMAR, CIFAR_SPEC.shape, backbone=trunk(classifier),
                            **NATURAL_SIZES["attention_gru"])
    return train_captioner(model, train.x[:N_TRAIN], train.tokens[:N_TRAIN], epochs=3, lr=2e-3, batch_size=64,
                           seed=0, pretrain_epochs=2)


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().tobytes()).hexdigest()


def test_scenes_are_seeded_grammatical_and_train_test_share_no_source_image(cifar, scenes):
    train, test = scenes
    again = load_caption_scenes("cifar_captions", "test", cifar[1])
    assert torch.equal(again.x, test.x) and torch.equal(again.tokens, test.tokens) and again.objects == test.objects
    assert test.x.shape == (1000, 3, 32, 96) and train.x.shape == (6000, 3, 32, 96)
    # the caption names the objects left to right; each slot holds its photo unchanged
    for i, (objects, caption) in enumerate(zip(test.objects[:50], test.captions()[:50])):
        assert caption == " ".join(GRAMMAR.caption_words(objects)) and caption.count(" a ") + 1 == len(objects)
        for (label, _, slot), k in zip(objects, test.sources[i]):
            assert torch.equal(test.x[i, :, :, 32 * slot:32 * slot + 32], cifar[1].x[k]) and cifar[1].y[k] == label
    used = [{_digest(split.x[k]) for s in sc.sources for k in s} for split, sc in zip(cifar, scenes)]
    assert len(used[0]) > 3000 and len(used[1]) > 600 and not used[0] & used[1]


def test_test_sized_captioner_captions_clean_test_scenes(captioner, scenes):
    test = scenes[1]
    hyp, refs = greedy_captions(captioner, test.x[:N_EVAL]), test.captions()[:N_EVAL]
    exact = sum(h == r for h, r in zip(hyp, refs)) / N_EVAL
    bleu = bleu4(hyp, refs)
    # measured: BLEU-4 0.416, exact match 2.5 %, object count right on 98 % (the zoo recipe, a 15-epoch trunk and
    # 5 epochs on 4,000 scenes: BLEU-4 0.679, 20.1 %); a captioner that ignored the image would still write the
    # grammar, so its object count must also follow the image
    counts = sum(h.count(" a ") == r.count(" a ") for h, r in zip(hyp, refs)) / N_EVAL
    assert bleu >= 0.33 and counts >= 0.85, (bleu, exact, counts)


def test_feature_matching_injects_the_keyword_more_as_eps_grows(captioner, scenes):
    train, test = scenes
    refs = test.captions()
    # "frog": a word the test-sized captioner uses (it never says "truck", the preset's keyword)
    with_k = [i for i, c in enumerate(train.captions()[:N_TRAIN]) if "frog" in c.split()]
    t = next(i for i in range(500, 1000) if "frog" in refs[i].split())
    target = CaptionTarget("keyword", test.x[t], refs[t], keyword="frog", feature_images=train.x[with_k],
                           grammar=GRAMMAR)
    src = test.x[[i for i in range(500) if "frog" not in refs[i].split()][:N_SRC]]
    grid = target.feature_grid(captioner)
    low, high = (score_attack(captioner, src, pgd_feature(captioner, src, grid, eps, steps=20), [target] * N_SRC, eps)
                 for eps in (4 / 255, 16 / 255))
    # measured on these 24 sources: clean 0.208, eps 4/255 0.375, 16/255 0.625 (feature distance falls with eps)
    assert high["success_rate"] >= high["clean_success_rate"] + 0.25, high
    assert high["success_rate"] >= low["success_rate"] + 0.125, (low, high)
    assert high["feature_distance"] < low["feature_distance"] < low["clean_feature_distance"], (low, high)


def test_bleu_of_perfect_captions_is_exactly_one():
    # sacrebleu's 100.0 divided by 100 gave 1.0000000000000004 here (the decoder-gradient attack forcing the target
    # caption on all 30 sources), which the caption row's [0, 1] check refused
    caption = "a ship left of a automobile left of a ship"
    assert bleu4([caption] * 30, [caption] * 30) == 1.0
