"""The data types every layer passes around: one split of an image data set, images in [0, 1].

:class:`DataSplit` holds its images in memory; :class:`StreamedSplit` holds only the labels and reads the
images of each batch when asked (the user's folders and .npz files, which may not fit in memory). Both
answer :meth:`images` and :func:`stream_batches`, which is how the evaluation reads either.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Union

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

    def images(self, indices: torch.Tensor | np.ndarray | range) -> torch.Tensor:
        """The images at ``indices``, as (len(indices), C, H, W)."""
        return self.x[torch.as_tensor(indices, dtype=torch.long)]

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


ImageReader = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class StreamedSplit:
    """A split whose images are read batch by batch: labels in memory, ``read(indices)`` decodes images.

    ``read`` takes sorted positions into the source and returns float32 (len, C, H, W) images in [0, 1];
    ``rows`` maps this split's positions to the source's (a seeded subset keeps the source's order).
    """

    y: torch.Tensor
    num_classes: int
    name: str
    split: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    read: ImageReader
    rows: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def images(self, indices: torch.Tensor | np.ndarray | range) -> torch.Tensor:
        """The images at ``indices`` (positions in this split), read from the source now."""
        return self.read(self.rows[np.asarray(indices, dtype=np.int64)])

    @property
    def x(self) -> torch.Tensor:
        """Every image at once, for the tasks that need the whole set in memory (evaluation streams instead)."""
        return self.images(np.arange(len(self)))

    def subset(self, n: int | None = None, indices: torch.Tensor | np.ndarray | None = None) -> "StreamedSplit":
        """The first ``n`` examples, or the examples at ``indices``, still read on demand."""
        if indices is None:
            indices = np.arange(len(self) if n is None else min(n, len(self)))
        idx = np.asarray(indices, dtype=np.int64)
        return StreamedSplit(self.y[torch.from_numpy(idx)], self.num_classes, self.name, self.split, self.class_names,
                             self.input_shape, self.read, self.rows[idx])

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) mini-batches read on demand; shuffling is seeded as :meth:`DataSplit.loader`'s."""
        batches = index_batches(len(self), batch_size, torch.Generator().manual_seed(seed) if shuffle else None)
        # Sorted within a batch so a sequential source (a compressed .npz member) reads forward.
        ordered = (idx.sort().values for idx in batches)
        return ((self.images(idx), self.y[idx]) for idx in ordered)


AnySplit = Union[DataSplit, StreamedSplit]


def stream_batches(data: AnySplit, batch_size: int, prefetch: int = 1) -> Iterator[tuple[range, torch.Tensor]]:
    """(positions, images) of consecutive batches, the next ``prefetch`` batches read in a background thread.

    Memory holds at most ``prefetch + 2`` batches (the one in use, the queued ones, the one being read),
    whatever the size of the data set; reading the next batch overlaps with the work on this one.
    """
    spans = [range(s, min(s + batch_size, len(data))) for s in range(0, len(data), batch_size)]
    if prefetch < 1 or len(spans) < 2:
        for span in spans:
            yield span, data.images(span)
        return
    ready: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for span in spans:
                if not offer((span, data.images(span))):
                    return
        except BaseException as err:   # handed to the consumer, which raises it where the batch was wanted
            offer(err)

    reader = threading.Thread(target=produce, name="rbl-batch-reader", daemon=True)
    reader.start()
    try:
        for _ in spans:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()
