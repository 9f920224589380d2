"""Ensemble of classifiers that attacks, the zoo and the leaderboard treat as one model.

DVERGE (Yang et al., NeurIPS 2020) averages the sub-models' *softmax probabilities* and returns the
log of that average as the ensemble's "logits" (reference code: ``models/ensemble.py``). We do the
same by default (``average="prob"``): softmax of the returned tensor is exactly the mean of the
members' probabilities, so argmax, cross-entropy and every logit-based attack see the paper's
ensemble. It is computed as ``logsumexp_k log_softmax(f_k(x)) - log K``, which is numerically stable
(no ``log(0)``) and keeps gradients from vanishing when one member is very confident.
``average="logit"`` (mean of raw logits) is kept as an option because it is the other common choice.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn

AVERAGE_MODES = ("prob", "logit")


class Ensemble(nn.Module):
    """Average of sub-model outputs, returned as logits ``(N, num_classes)``."""

    def __init__(self, members: Sequence[nn.Module], average: str = "prob") -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("Ensemble needs at least one member model, got an empty sequence")
        if average not in AVERAGE_MODES:
            raise ValueError(f"Ensemble average must be one of {AVERAGE_MODES}, got {average!r}")
        self.members = nn.ModuleList(members)
        self.average = average

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked member logits, shape ``(K, N, num_classes)``."""
        outs = [m(x) for m in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1:
            raise ValueError(f"Ensemble members disagree on output shape: {sorted(shapes)}")
        return torch.stack(outs, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble logits: log of the mean probability (``prob``) or the mean logit (``logit``)."""
        stacked = self.member_logits(x)
        if self.average == "logit":
            return stacked.mean(dim=0)
        log_probs = torch.log_softmax(stacked, dim=-1)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.members)

    def __getitem__(self, i: int) -> nn.Module:
        return self.members[i]
