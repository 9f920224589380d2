"""The controlled-caption attack (Aafaq et al.) on the real-image caption set: captioners, the GAN attack, baselines, task."""
from __future__ import annotations

import pytest
import torch

from attacks.caption.baselines import decoder_gradient, pgd_feature
from attacks.caption.evaluation import (CaptionTarget, PerturbationError, check_within, greedy_captions,
                                        natural_distance, score_attack)
from attacks.caption.gan import GANConfig, perturb, train_generator
from attacks.caption.scenes import decode
from robustbench_local.api import compose_config
from robustbench_local.data import load_dataset
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from robustbench_local.tasks.caption_attack import pick_targets, run
from robustbench_local.zoo import load_model

N = 24   # source scenes per target


@pytest.fixture(scope="module")
def captioners():
    return (load_model("caption_attn_gru", "mnist_captions", threat_model="Linf"),
            load_model("caption_flat_lstm", "mnist_captions", threat_model="Linf"))


@pytest.fixture(scope="module")
def test_scenes():
    data = load_dataset("mnist_captions", "test")
    return data.x, [decode(y) for y in data.y]


@pytest.fixture(scope="module")
def train_scenes():
    data = load_dataset("mnist_captions", "train", n=2000)
    return data.x, [decode(y) for y in data.y]


@pytest.fixture(scope="module")
def target(captioners, test_scenes, train_scenes):
    x, refs = test_scenes
    targeted, keyword = pick_targets(captioners[0], x, refs, 1, ["seven"], pool_start=500, train=train_scenes)
    return targeted[0], keyword[0]


def _sources(refs: list[str], target: CaptionTarget) -> list[int]:
    if target.strategy == "targeted":
        return [i for i in range(500) if refs[i] != target.caption][:N]
    return [i for i in range(500) if target.keyword not in refs[i].split()][:N]


def test_both_captioners_caption_clean_test_scenes_well(captioners, test_scenes):
    from attacks.caption.metrics import bleu4, exact_matches

    x, refs = test_scenes
    for model in captioners:
        hyp = greedy_captions(model, x[:300])
        exact = sum(exact_matches(hyp, refs[:300])) / 300
        assert exact >= 0.6 and bleu4(hyp, refs[:300]) >= 0.9, (type(model).__name__, exact)


def test_targeted_attack_far_above_clean_rate_and_features_reach_the_target(captioners, test_scenes, target):
    x, refs = test_scenes
    victim, other = captioners
    t = target[0]
    src = x[_sources(refs, t)]
    x_dec = decoder_gradient(victim, src, t.tokens, 0.3, steps=50)
    res = score_attack(victim, src, x_dec, [t] * len(src), 0.3, transfer=other)
    assert res["clean_success_rate"] == 0.0
    assert res["success_rate"] >= 0.5, res["success_rate"]      # measured 0.83 at eps 0.2 on 30 scenes
    # feature mimicking: x' ends far closer to the target grid than two different clean images are
    grid = t.feature_grid(victim)
    x_feat = pgd_feature(victim, src, grid, 0.3, steps=50)
    natural = natural_distance(victim, x[:200])
    feat = score_attack(victim, src, x_feat, [t] * len(src), 0.3)
    assert feat["feature_distance"] < 0.75 * natural < feat["clean_feature_distance"], (feat, natural)


def test_keyword_hit_rate_rises_with_eps(captioners, test_scenes, target):
    x, refs = test_scenes
    victim = captioners[0]
    k = target[1]
    src = x[_sources(refs, k)]
    rates = [score_attack(victim, src, decoder_gradient(victim, src, k.tokens, eps, steps=30), [k] * len(src),
                          eps)["success_rate"] for eps in (0.05, 0.3)]
    assert rates[0] + 0.3 <= rates[1], rates


def test_gan_generator_stays_in_the_ball_and_injects_the_keyword_more_with_eps(captioners, test_scenes, train_scenes,
                                                                               target):
    x, refs = test_scenes
    victim = captioners[0]
    k = target[1]
    src = x[_sources(refs, k)]
    train = train_scenes[0]
    grid = k.feature_grid(victim)
    assert k.feature_images is not None and len(k.feature_images) > 100   # the train scenes with "seven"
    results = []
    for eps in (0.1, 0.3):
        g = train_generator(victim, train, grid, eps, GANConfig(steps=300, batch_size=16, width=16, lr=5e-3))
        with torch.no_grad():
            x_adv = perturb(g, src, eps)
        assert check_within(src, x_adv, eps) <= eps + 1e-6
        results.append(score_attack(victim, src, x_adv, [k] * len(src), eps))
    low, high = results
    assert high["feature_distance"] < 0.85 * high["clean_feature_distance"], high
    # measured on these 24 scenes (pinned kernels, so on every machine), the task's default 300 steps, mimicking the
    # mean grid of the 460 train scenes with "seven": hit rate 0.167 at eps 0.1, 0.583 at 0.2, 0.625 at 0.3 (clean
    # 0.0); feature distance 29.8 of 43.2. One keyword scene's grid as the target reached 0.21 at eps 0.3.
    assert high["success_rate"] >= high["clean_success_rate"] + 0.4, high
    assert high["success_rate"] >= low["success_rate"] + 0.3, (low, high)


def test_out_of_ball_perturbation_is_rejected(test_scenes):
    x = test_scenes[0][:2]
    with pytest.raises(PerturbationError, match="exceed eps"):
        check_within(x, (x + 0.2).clamp(0, 1), 0.1)
    with pytest.raises(ValueError, match="keyword"):
        CaptionTarget("keyword", x[0], "a red one left of a blue two", keyword="seven")
    with pytest.raises(ValueError, match="feature_images"):
        CaptionTarget("targeted", x[0], "a red one left of a blue two", feature_images=x[0])


def test_task_writes_caption_rows_table_and_figure(tmp_path, captioners):
    cfg = compose_config("+experiment=caption_attack_quick", "task.eps=[0.3]", "task.n_images=4",
                         "task.attacks=[gan,pgd_feature]", "task.gan.steps=20", "task.gan.n_train=200",
                         "task.pgd_steps=10", "task.beam_n=4", "dataset.n_test=400")
    rows = list(run(cfg, TaskContext.from_config(cfg, tmp_path)))
    assert {r.kind for r in rows} == {"caption"}
    assert [r.attack for r in rows] == ["clean", "clean", "gan:targeted", "pgd_feature:targeted", "gan:keyword",
                                        "pgd_feature:keyword"]
    for r in rows[2:]:
        assert r.metrics["max_linf"] <= 0.3 + 1e-6 and r.metrics["transfer_model"] == "caption_flat_lstm"
    assert "pgd_feature" in (tmp_path / "caption_attack.md").read_text()
    assert (tmp_path / "caption_attack.png").stat().st_size > 1000


def test_task_rejects_a_classification_dataset(tmp_path):
    cfg = compose_config("task=caption_attack", "dataset=mnist")
    with pytest.raises(ConfigError, match="mnist_captions"):
        list(run(cfg, TaskContext.from_config(cfg, tmp_path)))
