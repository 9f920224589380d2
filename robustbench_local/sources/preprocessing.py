"""The user's input pipeline folded into the model, so attacks still see the suite's [0, 1] NCHW images.

Attacks perturb (and clip) the images the data set gives, in [0, 1]; a model trained on resized,
BGR or normalised inputs gets that preprocessing as differentiable layers in front of it, so the
threat model's eps stays measured in pixel space.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_local.sources.errors import ModelSourceError

__all__ = ["CHANNEL_ORDERS", "Preprocessed"]

CHANNEL_ORDERS = ("RGB", "BGR")


class Preprocessed(nn.Module):
    """``model`` behind resize -> RGB/BGR flip -> ``(x - mean) / std``, all differentiable.

    ``input_size`` is the (H, W) the model takes; images of another size are resized with bilinear
    interpolation, ``align_corners=False`` and **antialias off** (antialiasing is not what most
    training pipelines' tensor resize did, and plain bilinear keeps the gradient simple), so a large
    downscale aliases. ``channels`` (the data's channel count), when given, is checked against
    ``mean``/``std`` and the BGR flip when the module is built rather than on the first batch.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int] | None = None, channel_order: str = "RGB",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 channels: int | None = None) -> None:
        super().__init__()
        if channel_order not in CHANNEL_ORDERS:
            raise ModelSourceError(f"channel_order {channel_order!r} is not one of {list(CHANNEL_ORDERS)}")
        if input_size is not None and (len(input_size) != 2 or any(int(s) < 1 for s in input_size)):
            raise ModelSourceError(f"input_size {list(input_size)} must be (H, W) with positive sizes")
        mean_t = None if mean is None else torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = None if std is None else torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t is not None and std_t is not None and len(mean_t) != len(std_t):
            raise ModelSourceError(f"mean has {len(mean_t)} values but std has {len(std_t)}; give one per channel")
        for label, values in (("mean", mean_t), ("std", std_t)):
            if values is not None and channels is not None and len(values) not in (1, channels):
                raise ModelSourceError(f"{label} has {len(values)} values {values.tolist()} but the data have "
                                       f"{channels} channel{'s' if channels != 1 else ''}")
        if std_t is not None and not bool((std_t > 0).all()):
            raise ModelSourceError(f"std {std_t.tolist()} must be > 0 in every channel")
        if channel_order == "BGR" and channels is not None and channels != 3:
            raise ModelSourceError(f"channel_order BGR needs 3 channels but the data have {channels}")
        self.model = model
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.channel_order = channel_order
        # Buffers shaped (1, C, 1, 1) broadcast over N, H, W and follow .to(device); None keeps forward a no-op.
        self.register_buffer("mean", None if mean_t is None else mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", None if std_t is None else std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocess the [0, 1] NCHW batch ``x`` and return the wrapped model's logits."""
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=False)
        if self.channel_order == "BGR":
            x = x.flip(1)
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return self.model(x)

    def extra_repr(self) -> str:
        """The preprocessing settings, shown by ``print(module)``."""
        mean = None if self.mean is None else self.mean.flatten().tolist()
        std = None if self.std is None else self.std.flatten().tolist()
        return f"input_size={self.input_size}, channel_order={self.channel_order!r}, mean={mean}, std={std}"
