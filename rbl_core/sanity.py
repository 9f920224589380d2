"""Checks the field expects before an evaluation starts: eval mode, output shape, logits."""
from __future__ import annotations

import torch
from torch import nn

from rbl_core.device import module_device


class ModelCheckError(ValueError):
    """A model that cannot be evaluated honestly as given."""


def check_classifier(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """Raise if ``model`` is in train mode, returns the wrong shape, or returns probabilities."""
    if model.training:
        raise ModelCheckError("model is in train mode; call model.eval() (BatchNorm/Dropout would change results)")
    with torch.no_grad():
        try:
            out = model(x[: min(len(x), 32)].to(module_device(model)))
        except RuntimeError as err:
            raise ModelCheckError(f"model cannot take inputs of shape {tuple(x.shape[1:])}: {err}") from err
    expected = (min(len(x), 32), num_classes)
    if tuple(out.shape) != expected:
        raise ModelCheckError(f"model output has shape {tuple(out.shape)}; expected (N, classes) = {expected}. "
                              "Does the model match the data set?")
    if not torch.isfinite(out).all():
        raise ModelCheckError("model returns non-finite outputs on clean inputs")
    rows_sum_to_one = torch.allclose(out.sum(dim=1), out.new_ones(out.shape[0]), atol=1e-4)
    if bool((out >= 0).all() and (out <= 1).all() and rows_sum_to_one):
        raise ModelCheckError("model returns probabilities (rows in [0, 1] summing to 1); attacks need logits. "
                              "Remove the final softmax.")
