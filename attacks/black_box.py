"""Query-only access to a classifier: probabilities out, no gradients, every query counted."""
from __future__ import annotations

import torch
from torch import nn

from rbl_core.device import module_device


class ProbabilityOracle:
    """Wraps a model so black-box attacks can read only its output probabilities."""

    def __init__(self, model: nn.Module, batch_size: int = 512) -> None:
        self._model = model
        self._batch_size = batch_size
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities for a batch of images; each image counts as one query."""
        if x.ndim != 4:
            raise ValueError(f"oracle expects images (N, C, H, W), got shape {tuple(x.shape)}")
        self.queries += int(x.shape[0])
        # Computed on the model's device, returned on the queries' (a black-box search often holds them on the host).
        device = module_device(self._model)
        with torch.no_grad():
            chunks = [torch.softmax(self._model(chunk.float().to(device)), dim=1).to(x.device)
                      for chunk in x.split(self._batch_size)]
        return torch.cat(chunks).detach()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels (counted as queries)."""
        return self(x).argmax(dim=1)
