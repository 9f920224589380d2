"""The data type every layer passes around: one split of an image data set, images in [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


class DataError(ValueError):
    """A data set is missing, malformed, or asked for with bad options."""


@dataclass(frozen=True)
class DataSplit:
    """One split of an image data set: images in [0, 1] (N, C, H, W) and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str
    split: str
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int | None = None, indices: torch.Tensor | np.ndarray | None = None) -> "DataSplit":
        """The first ``n`` examples, or the examples at ``indices``."""
        if indices is None:
            indices = torch.arange(len(self) if n is None else min(n, len(self)))
        idx = torch.as_tensor(indices, dtype=torch.long)
        return DataSplit(self.x[idx], self.y[idx], self.num_classes, self.name, self.split, self.class_names)

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) mini-batches; shuffling is seeded so epochs are reproducible."""
        batches = index_batches(len(self), batch_size, torch.Generator().manual_seed(seed) if shuffle else None)
        return ((self.x[idx], self.y[idx]) for idx in batches)


def index_batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index mini-batches over ``n`` examples: one permutation drawn from ``generator``, or in order without one."""
    order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]
