"""The feature-guided game: moves with a correct clip, pixel-L0, playouts and pruning through a counted oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.black_box import ProbabilityOracle
from attacks.feature_guided.attack import FeatureGuidedAttack
from attacks.feature_guided.game import FeatureGame
from attacks.feature_guided.saliency import extract_features
from robustbench_local.data import load_dataset
from rbl_core.threat import ThreatModel


def _linear(c: int, h: int, w: int, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes)).eval()


def test_tau_moves_clip_to_the_valid_range_not_the_image_extremes():
    # DeepGame clips with np.clip(x, max, min) (swapped), which sends every manipulated pixel to the image
    # minimum; here +/- tau must land on x +/- tau clipped to [0, 1].
    img = np.full((1, 6, 6), 0.3, dtype=np.float32)
    img[0, 0, 0] = 0.9
    img[0, 5, 5] = 0.2
    feats = extract_features(img)
    game = FeatureGame(img, 0, feats, ProbabilityOracle(_linear(1, 6, 6)), tau=0.5, max_pixels_per_feature=None)
    vals = {}
    for k in range(feats.num_features):
        for (e,), (v,) in zip(game.elems[k].tolist(), game.vals[k].tolist()):
            vals.setdefault(e, set()).add(round(v, 4))
    assert vals[0] == {1.0, 0.4}  # 0.9 + 0.5 clipped to 1, 0.9 - 0.5
    assert vals[7] == {0.8, 0.0}  # 0.3 + 0.5, and 0.3 - 0.5 clipped to 0
    assert vals[35] == {0.7, 0.0}  # 0.2 + 0.5, and 0.2 - 0.5 clipped to 0 (not the image minimum 0.2)

def test_extreme_moves_and_pixel_l0_on_colour_images():
    img = np.zeros((3, 5, 5), dtype=np.float32)
    img[:, 2, 2] = [0.2, 0.7, 0.5]
    feats = extract_features(img)
    game = FeatureGame(img, 0, feats, ProbabilityOracle(_linear(3, 5, 5)), manipulation="extreme",
                       max_pixels_per_feature=None, norm="L0")
    hw = 25
    acts = {tuple(e): v for k in range(feats.num_features)
            for e, v in zip(game.elems[k].tolist(), game.vals[k].tolist())}
    assert acts[(12, 12 + hw, 12 + 2 * hw)] == [1.0, 0.0, 0.0]  # SafeCV max_manip: < 0.5 -> 1, else 0
    # two channels of one pixel changed = one pixel for L0; L2 sums every element
    state = {12: 1.0, 12 + hw: 0.0}
    assert game.distance(state) == 1.0
    game.norm = "L2"
    assert np.isclose(game.distance(state), np.sqrt(0.8 ** 2 + 0.7 ** 2))
    game.norm = "L1"
    assert np.isclose(game.distance(state), 0.8 + 0.7)
    with pytest.raises(ValueError, match="norm"):
        FeatureGame(img, 0, feats, ProbabilityOracle(_linear(3, 5, 5)), norm="Linf")
    with pytest.raises(ValueError, match="tau"):
        FeatureGame(img, 0, feats, ProbabilityOracle(_linear(3, 5, 5)), tau=0.0)


@pytest.fixture(scope="module")
def mnist_game_inputs(mnist_cnn):
    data = load_dataset("mnist", "test", n=8)
    with torch.no_grad():
        ok = mnist_cnn(data.x).argmax(dim=1) == data.y
    return data.x[ok][:4], data.y[ok][:4]


def test_playouts_return_oracle_checked_adversarial_states_and_pruning_keeps_them(mnist_cnn, mnist_game_inputs):
    x, y = mnist_game_inputs
    img, label = x[1].numpy(), int(y[1])
    oracle = ProbabilityOracle(mnist_cnn)
    game = FeatureGame(img, label, extract_features(img), oracle, norm="L0", budget=98, max_playout_depth=98,
                       max_pixels_per_feature=None, rng=np.random.default_rng(0))
    res = game.playouts([{}] * 100)
    found = [s for s in res.adversarial if s is not None]
    assert found, "long random plays inside a 98-pixel budget should reach some adversarial examples"
    for s, v in zip(res.adversarial, res.values):
        if s is None:
            assert game.budget < v <= 2 * game.budget  # failures rank behind every success
        else:
            assert v == game.distance(s) <= game.budget
            assert int(mnist_cnn(torch.from_numpy(game.image(s))[None]).argmax()) != label
    before = min(found, key=game.distance)
    pruned = game.prune(before)
    assert game.distance(pruned) <= game.distance(before)
    assert set(pruned) <= set(before)
    assert int(mnist_cnn(torch.from_numpy(game.image(pruned))[None]).argmax()) != label
    assert game.queries == oracle.queries  # every image the game looked at went through the oracle


class _Recorder(nn.Module):
    """Wraps a model and records how the attack used it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images, self.grad_calls = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.images += int(x.shape[0])
        self.grad_calls += int(torch.is_grad_enabled() or x.requires_grad)
        return self.model(x)


def test_attack_is_black_box_and_counts_every_query(mnist_cnn, mnist_game_inputs):
    x, y = mnist_game_inputs
    rec = _Recorder(mnist_cnn)
    attack = FeatureGuidedAttack(max_queries=300)
    res = attack(rec, x[:2], y[:2], ThreatModel("L0", None))
    assert rec.grad_calls == 0, "the attack must only read probabilities (no autograd)"
    assert all(p.grad is None for p in mnist_cnn.parameters())
    assert int(res.queries.sum()) == rec.images, "reported queries must equal the images the model saw"
    assert (res.queries > 0).all()
