"""Input-transformation defenses and the BPDA / EOT machinery: shapes, ranges, gradients, parameter checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.adaptive.wrappers import EOT, MeanLogits, Unaware
from attacks.base import AttackResult, EvasionAttack
from defenses.input_transforms.bit_depth import BitDepth
from defenses.input_transforms.bpda import straight_through
from defenses.input_transforms.jpeg import JPEG
from defenses.input_transforms.median import Median
from defenses.input_transforms.wrapper import DefenseError, Preprocessed
from defenses.raw_isp.demosaic import ClassicalISP
from rbl_core.threat import ThreatModel
from robustbench_local.data import load_dataset

CLASSIFIER = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_dataset("cifar10", "test", n=8).x


@pytest.mark.parametrize("transform", [JPEG(75), BitDepth(4), Median(3), ClassicalISP("malvar"),
                                       ClassicalISP("bilinear")], ids=lambda t: type(t).__name__)
def test_every_wrapper_passes_gradients_to_the_input(images, transform):
    wrapped = Preprocessed(CLASSIFIER, transform, "t").eval()
    x = images.clone().requires_grad_(True)
    out = transform(x)
    assert out.shape == images.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    wrapped(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bit_depth_quantises_exactly_and_its_backward_is_the_identity(images):
    x = images.clone().requires_grad_(True)
    out = BitDepth(2)(x)
    assert set(torch.unique(out.detach() * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    y = straight_through(x, lambda z: z * 0)
    assert torch.equal(y.detach(), torch.zeros_like(x))


def test_jpeg_changes_the_image_less_at_higher_quality(images):
    err = {q: float((JPEG(q)(images) - images).abs().mean()) for q in (10, 50, 95)}
    assert err[10] > err[50] > err[95] > 0


@pytest.mark.parametrize("make,message", [(lambda: JPEG(0), "quality"), (lambda: JPEG(101), "quality"),
                                          (lambda: BitDepth(0), "bits"), (lambda: Median(4), "odd"),
                                          (lambda: ClassicalISP("menon"), "method")])
def test_parameters_out_of_range_are_refused(make, message):
    with pytest.raises(DefenseError, match=message):
        make()


def test_an_rgb_defense_refuses_grey_images():
    with pytest.raises(DefenseError, match="3-channel"):
        Preprocessed(CLASSIFIER, JPEG(75), "jpeg")(torch.zeros(1, 1, 32, 32))


class _Recorder(EvasionAttack):
    """Returns its input unchanged and records which model it was handed."""

    def run(self, model, x, y, threat):
        self.seen = model
        return AttackResult(x, torch.zeros(len(x), dtype=torch.bool))


def test_unaware_crafts_on_the_bare_model_and_eot_averages_draws():
    bare, defended = nn.Identity(), nn.Linear(2, 2)
    inner = _Recorder()
    Unaware(inner, bare)(defended, torch.zeros(1, 1, 1, 2), torch.zeros(1, dtype=torch.long), ThreatModel("Linf", 0.1))
    assert inner.seen is bare
    EOT(inner, 4)(defended, torch.zeros(1, 1, 1, 2), torch.zeros(1, dtype=torch.long), ThreatModel("Linf", 0.1))
    assert isinstance(inner.seen, MeanLogits) and inner.seen.samples == 4

    class Noisy(nn.Module):
        def forward(self, x):
            return x + torch.randn_like(x)

    torch.manual_seed(0)
    x = torch.zeros(1000, 1)
    assert float(MeanLogits(Noisy(), 16)(x).std()) < 0.5 * float(Noisy()(x).std())
