"""Model factories a test hands to ``model=torch model.target=user_nets:...`` (tests/ is put on PYTHONPATH)."""
from __future__ import annotations

from torch import nn

from rbl_core.architectures import build


def probability_cnn(arch: str, input_shape: list[int], num_classes: int) -> nn.Module:
    """A zoo architecture that ends in a softmax: it returns probabilities, which attacks must not be given."""
    return nn.Sequential(build(arch, tuple(input_shape), num_classes), nn.Softmax(dim=1))
