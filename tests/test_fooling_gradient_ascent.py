"""Gradient-ascent fooling images (Nguyen et al. 2015) on the MNIST zoo CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.base import AttackError
from attacks.fooling.gradient_ascent import GradientAscentConfig, gaussian_blur, gradient_ascent_fooling
from attacks.fooling.result import nearest_same_class_distance, real_nearest_neighbour_distance
from robustbench_local.data import load_dataset

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist", "test")


def test_probability_ascent_reaches_9999_on_every_class(mnist_cnn, mnist_test):
    result = gradient_ascent_fooling(mnist_cnn, 10, SHAPE, GradientAscentConfig(steps=300), seed=0)
    assert result.confidence.min() >= 0.9999, result.confidence
    with torch.no_grad():
        probs = mnist_cnn(result.images).softmax(1)
    assert probs[torch.arange(10), torch.arange(10)].min() >= 0.9999
    assert result.images.min() >= 0 and result.images.max() <= 1
    # First steps are recorded in order: arg-max, then 0.99, 0.999, 0.9999.
    steps = result.first_step
    argmax = np.array(result.extra["steps_to_argmax"])
    assert (steps >= 0).all() and (argmax <= steps[:, 0]).all()
    assert (np.diff(steps, axis=1) >= 0).all()
    assert steps[:, -1].max() <= 150                     # seeds note: <= 100-ish steps without regularisation
    fool = np.array(nearest_same_class_distance(result.images, result.classes, mnist_test.x, mnist_test.y))
    real = np.array(real_nearest_neighbour_distance(mnist_test.x, mnist_test.y, 10))
    assert (fool > 2 * real).all(), (fool, real)


def test_logit_objective_and_seeds(mnist_cnn):
    cfg = GradientAscentConfig(objective="logit", lr_policy="constant", lr=0.05, steps=200)
    a = gradient_ascent_fooling(mnist_cnn, 10, SHAPE, cfg, seed=1, classes=[3, 7])
    b = gradient_ascent_fooling(mnist_cnn, 10, SHAPE, cfg, seed=1, classes=[3, 7])
    c = gradient_ascent_fooling(mnist_cnn, 10, SHAPE, cfg, seed=2, classes=[3, 7])
    assert a.classes == (3, 7) and a.predicted.tolist() == [3, 7]
    assert a.confidence.min() >= 0.9999
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def _total_variation(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_blur_gives_smooth_images_that_still_fool(mnist_cnn):
    base = dict(objective="logit", lr_policy="constant", lr=0.05, steps=300)
    plain = gradient_ascent_fooling(mnist_cnn, 10, SHAPE, GradientAscentConfig(**base), seed=0, classes=[0, 1, 2])
    blurred = gradient_ascent_fooling(mnist_cnn, 10, SHAPE,
                                      GradientAscentConfig(**base, blur_radius=0.5, blur_every=2), seed=0,
                                      classes=[0, 1, 2])
    assert blurred.confidence.min() >= 0.9999
    assert _total_variation(blurred.images) < 0.3 * _total_variation(plain.images)


def test_decay_pulls_the_image_toward_the_centre(mnist_cnn):
    def distance(decay: float) -> torch.Tensor:
        cfg = GradientAscentConfig(objective="logit", lr_policy="constant", lr=0.05, steps=200, decay=decay,
                                   stop_confidence=None)
        res = gradient_ascent_fooling(mnist_cnn, 10, SHAPE, cfg, seed=0, classes=[0, 1])
        assert res.confidence.min() >= 0.9999
        return (res.images - 0.5).flatten(1).norm(dim=1)

    assert (distance(0.02) < 0.7 * distance(0.0)).all()


def test_gaussian_blur_preserves_mass_and_constants():
    x = torch.rand(2, 3, 9, 9)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 8, 8), 0.3), 1.0), torch.full((1, 1, 8, 8), 0.3))
    assert gaussian_blur(x, 0.5).shape == x.shape
    assert gaussian_blur(x, 2.0).std() < x.std()


def test_bad_settings_are_rejected(mnist_cnn):
    with pytest.raises(AttackError, match="objective"):
        GradientAscentConfig(objective="loss")
    with pytest.raises(AttackError, match="blur_radius"):
        GradientAscentConfig(blur_radius=0.1)
    with pytest.raises(AttackError, match="classes"):
        gradient_ascent_fooling(mnist_cnn, 10, SHAPE, seed=0, classes=[10])
    with pytest.raises(AttackError, match="model returned"):
        gradient_ascent_fooling(mnist_cnn, 11, SHAPE, GradientAscentConfig(steps=1), seed=0)
