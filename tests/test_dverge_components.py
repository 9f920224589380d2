"""Unit tests of DVERGE's parts on real MNIST images: ensemble averaging, feature layers, feature
distillation, the cross-training loss, config checking, transfer attacks and the transferability matrix."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import AttackError
from attacks.transfer.attacks import MomentumPGD, attack_loss, input_diversity
from defenses.dverge.training import DvergeConfig, train_dverge
from robustbench_local.zoo.recipes_dverge import build_dverge_ensemble
from defenses.dverge.ensemble import Ensemble
from defenses.dverge.feature_distillation import distill_features, feature_layers, layer_features
from defenses.dverge.transferability import mean_off_diagonal, plot_transferability, transferability_matrix
from robustbench_local.data import load_dataset
from rbl_core.threat import Norm, ThreatModel
from robustbench_local.zoo import load_model
from rbl_core.architectures import build
from robustbench_local.zoo.recipes import Recipe


@pytest.fixture(scope="module")
def mnist():
    """256 real MNIST test-split images."""
    return load_dataset("mnist", "test", n=256)


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """The zoo's plain MNIST CNN (trained once, cached)."""
    return load_model("standard_cnn", "mnist")


def _members(k: int, shape=(1, 28, 28)) -> list[nn.Module]:
    out = []
    for s in range(k):
        torch.manual_seed(s)
        out.append(build("cnn_small", shape, 10).eval())
    return out


def test_ensemble_averages_probabilities(mnist) -> None:
    members = _members(3)
    ens = Ensemble(members).eval()
    x = mnist.x[:8]
    with torch.no_grad():
        mean_prob = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
        assert torch.allclose(ens(x).softmax(-1), mean_prob, atol=1e-6)
        # Returned "logits" are log-probabilities of the averaged distribution.
        assert torch.allclose(ens(x).exp().sum(-1), torch.ones(8), atol=1e-5)
        assert torch.allclose(Ensemble(members, average="logit")(x), torch.stack([m(x) for m in members]).mean(0))
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ValueError, match="average must be one of"):
        Ensemble(members, average="median")


def test_feature_layers_are_pre_relu_in_execution_order(mnist) -> None:
    net = build("cnn_small", (1, 28, 28), 10)
    layers = feature_layers(net, mnist.x[:1])
    assert [type(m) for m in layers] == [nn.Conv2d, nn.Conv2d, nn.Linear, nn.Linear]
    assert layers[-1] is net[-1]  # the last "layer" is the logits
    bn_net = build("cnn_bn", (3, 32, 32), 10)
    bn_layers = feature_layers(bn_net, torch.rand(1, 3, 32, 32))
    # Conv followed by BatchNorm is represented by the BN output (reference: "conv1 + BN").
    assert [type(m) for m in bn_layers] == [nn.BatchNorm2d] * 3 + [nn.Linear]
    with torch.no_grad():
        feat = layer_features(net, layers[2], mnist.x[:4])
        manual = net[:8](mnist.x[:4])  # conv, relu, pool, conv, relu, pool, flatten, linear
        assert torch.allclose(feat, manual, atol=1e-6)
    with pytest.raises(ValueError, match="NCHW"):
        feature_layers(net, mnist.x[0])


def test_distillation_matches_target_features_within_eps(mnist, trained) -> None:
    layers = feature_layers(trained, mnist.x[:1])
    xs, xt = mnist.x[:64], mnist.x[64:128]
    eps = 0.3
    for layer in (layers[1], layers[-1]):
        z = distill_features(trained, layer, xs, xt, eps=eps, step_size=eps / 10, steps=10)
        assert float((z - xs).abs().max()) <= eps + 1e-6 and float(z.min()) >= 0 and float(z.max()) <= 1
        with torch.no_grad():
            target = layer_features(trained, layer, xt)
            before = (layer_features(trained, layer, xs) - target).pow(2).flatten(1).sum(1)
            after = (layer_features(trained, layer, z) - target).pow(2).flatten(1).sum(1)
        assert float((after < before).float().mean()) > 0.95
        assert float(after.mean()) < 0.6 * float(before.mean())
    # The distilled image carries the target's non-robust features: at the logit layer, the model
    # now often predicts the target's class although the image stays close to the source.
    z = distill_features(trained, layers[-1], xs, xt, eps=eps, step_size=eps / 10, steps=10)
    with torch.no_grad():
        pred_t = trained(xt).argmax(1)
        hit = (trained(z).argmax(1) == pred_t)[mnist.y[:64] != mnist.y[64:128]].float().mean()
    assert float(hit) > 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        distill_features(trained, layers[-1], xs, xt[:3], eps, 0.03)


def test_cross_training_step_uses_only_other_members_images(mnist) -> None:
    # With eps = 0 every distilled image equals the source batch, so DVERGE's loss for model i is
    # (K - 1) * CE(f_i(x_s), y_s): one DVERGE step must equal one SGD step on that loss.
    members = _members(3)
    ens = Ensemble(copy.deepcopy(members))
    x, y = mnist.x[:64], mnist.y[:64]
    cfg = DvergeConfig(epochs=1, batch_size=64, lr=0.05, momentum=0.0, weight_decay=0.0, distill_eps=0.0,
                       distill_step_size=0.01, distill_steps=1, seed=0)
    hist = train_dverge(ens, x, y, cfg, progress=None)
    assert len(hist.layers) == 1 and len(hist.losses[0]) == 3
    for ref, got in zip(members, ens.members):
        ref.train()
        opt = torch.optim.SGD(ref.parameters(), lr=0.05)
        loss = 2 * F.cross_entropy(ref(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for p_ref, p_got in zip(ref.parameters(), got.parameters()):
            assert torch.allclose(p_ref, p_got, atol=1e-5)


def test_layer_is_resampled_every_epoch_and_plus_variants_run(mnist) -> None:
    ens = Ensemble(_members(2))
    cfg = DvergeConfig(epochs=6, batch_size=128, n_train=128, distill_steps=2, seed=3)
    hist = train_dverge(ens, mnist.x, mnist.y, cfg, progress=None)
    assert len(hist.layers) == 6 and len(set(hist.layers)) > 1 and all(1 <= v <= 4 for v in hist.layers)
    assert all(0 < d <= t for d, t in zip(hist.distill_times, hist.epoch_times))
    fixed = train_dverge(Ensemble(_members(2)), mnist.x, mnist.y,
                         DvergeConfig(epochs=2, n_train=64, distill_steps=1, distill_layer=2, plus_clean=True,
                                      plus_adv=True, adv_steps=1), progress=None)
    assert fixed.layers == [2, 2] and all(np.isfinite(v) for row in fixed.losses for v in row)


def test_config_and_builder_errors_name_the_problem(mnist) -> None:
    with pytest.raises(KeyError, match="distil_eps"):
        DvergeConfig.from_params({"distil_eps": 0.3})
    with pytest.raises(ValueError, match="lr_milestones"):
        DvergeConfig.from_params({"lr_milestones": [2, 3]})
    with pytest.raises(ValueError, match="at least 2 sub-models"):
        train_dverge(Ensemble(_members(1)), mnist.x, mnist.y, DvergeConfig(epochs=1), progress=None)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_dverge(Ensemble(_members(2)), mnist.x * 255, mnist.y, DvergeConfig(epochs=1), progress=None)
    with pytest.raises(ValueError, match="distill_layer must be in 1..4"):
        train_dverge(Ensemble(_members(2)), mnist.x, mnist.y, DvergeConfig(epochs=1, distill_layer=9), progress=None)
    bad = Recipe("x", "mnist", "cnn_small", params=dict(members=2))
    with pytest.raises(KeyError, match="baseline"):
        build_dverge_ensemble(bad, mnist)


def test_momentum_attacks_stay_in_ball_and_fool_a_plain_cnn(mnist, trained) -> None:
    x, y = mnist.x[:100], mnist.y[:100]
    threat = ThreatModel(Norm.Linf, 0.2)
    torch.manual_seed(0)
    for attack in (MomentumPGD(steps=10, loss="ce"), MomentumPGD(steps=10, loss="cw", diversity_prob=0.5)):
        res = attack(trained, x, y, threat)
        assert bool(threat.contains(x, res.x_adv).all())
        with torch.no_grad():
            clean_acc = float((trained(x).argmax(1) == y).float().mean())
            adv_acc = float((trained(res.x_adv).argmax(1) == y).float().mean())
        assert clean_acc > 0.9 and adv_acc < 0.3, (attack.name, clean_acc, adv_acc)
    assert input_diversity(x, prob=1.0).shape == x.shape
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert float(attack_loss(logits, torch.tensor([0]), "cw")) == pytest.approx(-1.0)
    assert float(attack_loss(logits, torch.tensor([2]), "cw", kappa=0.5)) == pytest.approx(0.5)
    with pytest.raises(AttackError, match="Linf"):
        MomentumPGD()(trained, x, y, ThreatModel(Norm.L2, 1.0))
    with pytest.raises(ValueError, match="'ce' or 'cw'"):
        attack_loss(logits, torch.tensor([0]), "hinge")


def test_transferability_matrix_and_heatmap(mnist, trained, tmp_path) -> None:
    # Two copies of one model: an example crafted on either fools both or neither (row entries equal).
    torch.manual_seed(0)
    mat, used = transferability_matrix([trained, copy.deepcopy(trained)], mnist.x, mnist.y, 0.2, steps=10,
                                       restarts=1, n=100)
    assert mat.shape == (2, 2) and used == 100
    assert np.allclose(mat[:, 0], mat[:, 1]) and mat.min() > 0.7
    assert mean_off_diagonal(mat) == pytest.approx((mat[0, 1] + mat[1, 0]) / 2)
    png = plot_transferability(mat, tmp_path / "t.png", "copies")
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="at least 2"):
        transferability_matrix([trained], mnist.x, mnist.y, 0.1)
