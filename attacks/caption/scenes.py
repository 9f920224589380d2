"""A seeded captioning data set: 2-3 real MNIST digits, each coloured, placed left to right, captioned by a grammar.

Stands in for MS-COCO (seeds.md section 2 (d)). A scene draws 2 or 3 digits from a given MNIST split (with
replacement), colours each red, green, blue or yellow (the digit's intensity times the colour's RGB), shrinks it
to ``DIGIT`` x ``DIGIT`` pixels and pastes it into its own slot (left, middle, right; an x/y jitter of up to
``JITTER`` pixels) of a black 3 x ``HEIGHT`` x ``WIDTH`` canvas. Two-digit scenes leave one random slot empty. The
caption lists the objects left to right: "a red seven left of a blue two" or
"a red seven left of a blue two left of a green one". Train and test scenes are drawn from disjoint MNIST images
(the harness's train and test splits) with different seeds, so no source digit is shared.

Captions are token ids: ``<bos>`` caption ``<eos>`` padded with ``<pad>`` to ``MAX_LEN``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rbl_core.data import DataSplit

HEIGHT, WIDTH, DIGIT, JITTER = 16, 48, 14, 1
SLOTS = 3
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
COLOUR_WORDS = tuple(COLOURS)
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
VOCAB = (PAD, BOS, EOS, "a", "left", "of") + COLOUR_WORDS + DIGIT_WORDS
TOKEN = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN[PAD], TOKEN[BOS], TOKEN[EOS]
MAX_LEN = 2 + 5 * SLOTS - 2   # <bos> + "a colour digit" per object + "left of" between + <eos>


@dataclass(frozen=True)
class CaptionScenes:
    """Images (N, 3, HEIGHT, WIDTH) in [0, 1], token ids (N, MAX_LEN) and each object's (digit, colour, slot)."""

    x: torch.Tensor
    tokens: torch.Tensor
    objects: tuple[tuple[tuple[int, int, int], ...], ...]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def captions(self) -> list[str]:
        """The captions as text."""
        return [decode(t) for t in self.tokens]

    def split(self, name: str, split: str) -> DataSplit:
        """As a ``DataSplit`` whose ``y`` holds token ids (N, MAX_LEN) and whose classes are the vocabulary."""
        return DataSplit(self.x, self.tokens, len(VOCAB), name, split, VOCAB)


def caption_words(objects: tuple[tuple[int, int, int], ...]) -> list[str]:
    """The words of the caption of ``objects`` ((digit, colour index, slot), in any order)."""
    words: list[str] = []
    for i, (digit, colour, _) in enumerate(sorted(objects, key=lambda o: o[2])):
        if i:
            words += ["left", "of"]
        words += ["a", COLOUR_WORDS[colour], DIGIT_WORDS[digit]]
    return words


def encode(words: list[str]) -> torch.Tensor:
    """Token ids of ``words`` framed by <bos>/<eos> and padded to MAX_LEN."""
    unknown = [w for w in words if w not in TOKEN]
    if unknown:
        raise ValueError(f"words {unknown} are not in the caption vocabulary")
    ids = [BOS_ID] + [TOKEN[w] for w in words] + [EOS_ID]
    if len(ids) > MAX_LEN:
        raise ValueError(f"caption of {len(words)} words is longer than MAX_LEN={MAX_LEN} allows")
    return torch.tensor(ids + [PAD_ID] * (MAX_LEN - len(ids)), dtype=torch.long)


def decode(ids: torch.Tensor | list[int]) -> str:
    """The caption text of token ids: words after <bos> up to the first <eos> (pads and <bos> dropped)."""
    words = []
    for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            words.append(VOCAB[i])
    return " ".join(words)


def make_caption_scenes(digits: DataSplit, n: int, seed: int, counts: tuple[int, ...] = (2, 3)) -> CaptionScenes:
    """``n`` scenes of ``counts`` objects each (drawn uniformly) with ``seed`` from the grey MNIST ``digits``."""
    if n <= 0:
        raise ValueError(f"make_caption_scenes: n must be positive, got {n}")
    if not counts or any(not 1 <= c <= SLOTS for c in counts):
        raise ValueError(f"make_caption_scenes: object counts {counts} must lie in 1..{SLOTS}")
    if digits.input_shape[0] != 1 or digits.num_classes != 10:
        raise ValueError(f"make_caption_scenes needs grey MNIST digits, got {digits.name} of shape {digits.input_shape}")
    gen = torch.Generator().manual_seed(seed)
    small = F.interpolate(digits.x, size=(DIGIT, DIGIT), mode="area")
    colours = torch.tensor(list(COLOURS.values()))
    x = torch.zeros(n, 3, HEIGHT, WIDTH)
    tokens, objects = [], []
    slot_w = WIDTH // SLOTS
    for i in range(n):
        count = counts[int(torch.randint(len(counts), (1,), generator=gen))]
        slots = sorted(torch.randperm(SLOTS, generator=gen)[:count].tolist())
        scene = []
        for slot in slots:
            k = int(torch.randint(len(digits), (1,), generator=gen))
            colour = int(torch.randint(len(COLOURS), (1,), generator=gen))
            dx, dy = (torch.randint(2 * JITTER + 1, (2,), generator=gen) - JITTER).tolist()
            top = (HEIGHT - DIGIT) // 2 + dy
            left = slot * slot_w + (slot_w - DIGIT) // 2 + dx
            top, left = min(max(top, 0), HEIGHT - DIGIT), min(max(left, 0), WIDTH - DIGIT)
            patch = small[k] * colours[colour].view(3, 1, 1)
            region = x[i, :, top:top + DIGIT, left:left + DIGIT]
            x[i, :, top:top + DIGIT, left:left + DIGIT] = torch.maximum(region, patch)
            scene.append((int(digits.y[k]), colour, slot))
        objects.append(tuple(scene))
        tokens.append(encode(caption_words(tuple(scene))))
    return CaptionScenes(x.clamp(0, 1), torch.stack(tokens), tuple(objects))
