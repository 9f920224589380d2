"""One string per set of zoo weights: a digest to compare trained weights across machines and code versions."""
from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors of ``state_dict``, in order, as their raw bytes (CPU, contiguous)."""
    h = hashlib.sha256()
    for tensor in state_dict.values():
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
