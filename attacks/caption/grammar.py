"""The caption grammar of a scene set: its vocabulary, the caption of a scene's objects, token ids and back.

A scene's objects sit in the slots of a ``rows`` x ``cols`` grid. The caption names them in reading order (row by
row, left to right), each as "a [colour] <class>", and joins two consecutive objects by "left of" when they share
a row, else by "above": "a red seven left of a blue two" (MNIST, one row), "a truck left of a dog above a ship"
(a 2 x 2 grid). Captions are token ids: ``<bos>`` caption ``<eos>`` padded with ``<pad>`` to ``max_len``.
The first three tokens are the same in every grammar, so ``PAD_ID``, ``BOS_ID`` and ``EOS_ID`` are shared.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FUNCTION_WORDS = ("a", "left", "of")


@dataclass(frozen=True)
class CaptionGrammar:
    """Vocabulary and caption rule of one scene set: object classes, optional colours, the slot grid, object count."""

    class_words: tuple[str, ...]
    colour_words: tuple[str, ...] = ()
    rows: int = 1
    cols: int = 3
    max_objects: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= self.rows * self.cols:
            raise ValueError(f"max_objects {self.max_objects} must lie in 1..{self.rows * self.cols} slots")
        if len(set(self.words)) != len(self.words):
            raise ValueError(f"caption vocabulary has repeated words: {self.words}")

    @cached_property
    def words(self) -> tuple[str, ...]:
        """The vocabulary: special tokens, function words ("above" only with several rows), colours, classes."""
        return (PAD, BOS, EOS) + FUNCTION_WORDS + (("above",) if self.rows > 1 else ()) + self.colour_words \
            + self.class_words

    @cached_property
    def token(self) -> dict[str, int]:
        """Word -> id."""
        return {w: i for i, w in enumerate(self.words)}

    @property
    def attributes(self) -> int:
        """Content words per object: the class, and the colour where the grammar has colours."""
        return 1 + bool(self.colour_words)

    @property
    def max_len(self) -> int:
        """Tokens of the longest caption: <bos>, "a" + attributes per object, a 2-word relation between, <eos>."""
        return 2 + self.max_objects * (1 + self.attributes) + 2 * (self.max_objects - 1)

    @property
    def content_words(self) -> tuple[str, ...]:
        """The words a keyword may be: colours and classes."""
        return self.colour_words + self.class_words

    def caption_words(self, objects: tuple[tuple[int, int, int], ...]) -> list[str]:
        """The words of the caption of ``objects`` ((class, colour index or -1, slot), in any order)."""
        words: list[str] = []
        previous_row = None
        for label, colour, slot in sorted(objects, key=lambda o: o[2]):
            row = slot // self.cols
            if previous_row is not None:
                words += ["left", "of"] if row == previous_row else ["above"]
            words += ["a"] + ([self.colour_words[colour]] if self.colour_words else []) + [self.class_words[label]]
            previous_row = row
        return words

    def encode(self, words: list[str]) -> torch.Tensor:
        """Token ids of ``words`` framed by <bos>/<eos> and padded to ``max_len``."""
        unknown = [w for w in words if w not in self.token]
        if unknown:
            raise ValueError(f"words {unknown} are not in the caption vocabulary")
        ids = [BOS_ID] + [self.token[w] for w in words] + [EOS_ID]
        if len(ids) > self.max_len:
            raise ValueError(f"caption of {len(words)} words is longer than max_len={self.max_len} allows")
        return torch.tensor(ids + [PAD_ID] * (self.max_len - len(ids)), dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The caption text of token ids: words after <bos> up to the first <eos> (pads and <bos> dropped)."""
        words = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                words.append(self.words[i])
        return " ".join(words)

    def object_labels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per caption (N, T): its content-word ids in caption order, ``PAD_ID`` past the last object.

        (N, max_objects * attributes): object i's colour (if any) and class, the labels an encoder probe learns.
        """
        content = torch.tensor([self.token[w] for w in self.content_words])
        width = self.max_objects * self.attributes
        out = torch.full((tokens.shape[0], width), PAD_ID, dtype=torch.long)
        for i, row in enumerate(tokens):
            ids = row[torch.isin(row, content)][:width]
            out[i, :len(ids)] = ids
        return out
