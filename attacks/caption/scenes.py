"""Seeded captioning data sets: 2-3 real objects placed in the slots of a canvas, captioned by a grammar.

Stand-ins for MS-COCO (seeds.md section 2 (d)). A :class:`SceneSpec` fixes the canvas, the object size, the slot
grid and the :class:`~attacks.caption.grammar.CaptionGrammar`. A scene draws 2 or 3 objects from a source split
(with replacement), shrinks each to ``size`` x ``size`` pixels (area resampling) and pastes it into its own slot
(an x/y jitter of up to ``jitter`` pixels); unused slots stay background. Two specs:

* ``MNIST_SPEC`` (``mnist_captions``): grey MNIST digits coloured red, green, blue or yellow (intensity times the
  colour's RGB, pasted by maximum) in a 1 x 3 row of a black 3 x 16 x 48 canvas: "a red seven left of a blue two";
* ``CIFAR_SPEC`` (``cifar_captions``): whole CIFAR-10 photos (32 x 32, pasted opaque) in a 1 x 3 row of a
  mid-grey 3 x 32 x 96 canvas: "a truck left of a dog left of a ship". (The grammar also writes 2 x 2 grids,
  "... above ...": a first version on a 40 x 40 canvas did not train to a usable captioner in this CPU budget.)

Train and test scenes come from disjoint source images (the harness's train and test splits) with different seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from attacks.caption.grammar import BOS_ID, EOS_ID, PAD_ID, CaptionGrammar  # noqa: F401 - re-exported ids
from rbl_core.data import DataSplit

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
CIFAR_WORDS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class SceneSpec:
    """Canvas (3 x height x width, filled with ``background``), object size and jitter, colours, and the grammar."""

    grammar: CaptionGrammar
    height: int
    width: int
    size: int
    jitter: int = 1
    background: float = 0.0
    colours: tuple[tuple[float, float, float], ...] = ()   # RGB per grammar colour word; () = RGB sources as they are
    source_channels: int = 1

    def __post_init__(self) -> None:
        g = self.grammar
        if len(self.colours) != len(g.colour_words):
            raise ValueError(f"{len(self.colours)} colour values for {len(g.colour_words)} colour words")
        if self.size > min(self.height // g.rows, self.width // g.cols):
            raise ValueError(f"objects of {self.size} px do not fit {g.rows} x {g.cols} slots of a "
                             f"{self.height} x {self.width} canvas")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image shape (3, height, width)."""
        return (3, self.height, self.width)

    def corner(self, slot: int, dx: int, dy: int) -> tuple[int, int]:
        """Top-left pixel of an object in ``slot`` shifted by the jitter (dx, dy), kept on the canvas."""
        g = self.grammar
        row, col = divmod(slot, g.cols)
        slot_h, slot_w = self.height // g.rows, self.width // g.cols
        top = row * slot_h + (slot_h - self.size) // 2 + dy
        left = col * slot_w + (slot_w - self.size) // 2 + dx
        return min(max(top, 0), self.height - self.size), min(max(left, 0), self.width - self.size)


MNIST_SPEC = SceneSpec(CaptionGrammar(DIGIT_WORDS, tuple(COLOURS), rows=1, cols=3), height=16, width=48, size=14,
                       jitter=1, background=0.0, colours=tuple(COLOURS.values()), source_channels=1)
# native 32 x 32 photos, no jitter: each slot is exactly the input a CIFAR-10 classifier backbone was trained on
CIFAR_SPEC = SceneSpec(CaptionGrammar(CIFAR_WORDS, rows=1, cols=3), height=32, width=96, size=32, jitter=0,
                       background=0.5, source_channels=3)

# The MNIST grammar under its historical names.
MNIST_GRAMMAR = MNIST_SPEC.grammar
VOCAB, TOKEN, MAX_LEN = MNIST_GRAMMAR.words, MNIST_GRAMMAR.token, MNIST_GRAMMAR.max_len
COLOUR_WORDS = MNIST_GRAMMAR.colour_words
encode, decode = MNIST_GRAMMAR.encode, MNIST_GRAMMAR.decode


@dataclass(frozen=True)
class CaptionScenes:
    """Images (N, 3, H, W) in [0, 1], token ids (N, max_len), each object's (class, colour or -1, slot), its source."""

    x: torch.Tensor
    tokens: torch.Tensor
    objects: tuple[tuple[tuple[int, int, int], ...], ...]
    grammar: CaptionGrammar = MNIST_GRAMMAR
    sources: tuple[tuple[int, ...], ...] = field(default=())   # per scene, the source split's index of each object

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def captions(self) -> list[str]:
        """The captions as text."""
        return [self.grammar.decode(t) for t in self.tokens]

    def split(self, name: str, split: str) -> DataSplit:
        """As a ``DataSplit`` whose ``y`` holds token ids (N, max_len) and whose classes are the vocabulary."""
        return DataSplit(self.x, self.tokens, len(self.grammar.words), name, split, self.grammar.words)


def make_caption_scenes(images: DataSplit, n: int, seed: int, counts: tuple[int, ...] = (2, 3),
                        spec: SceneSpec = MNIST_SPEC) -> CaptionScenes:
    """``n`` scenes of ``counts`` objects each (drawn uniformly) with ``seed`` from the source ``images`` (``spec``)."""
    g = spec.grammar
    slots_n = g.rows * g.cols
    if n <= 0:
        raise ValueError(f"make_caption_scenes: n must be positive, got {n}")
    if not counts or any(not 1 <= c <= g.max_objects for c in counts):
        raise ValueError(f"make_caption_scenes: object counts {counts} must lie in 1..{g.max_objects}")
    if images.input_shape[0] != spec.source_channels or images.num_classes != len(g.class_words):
        raise ValueError(f"make_caption_scenes needs {spec.source_channels}-channel images of {len(g.class_words)} "
                         f"classes, got {images.name} of shape {images.input_shape}, {images.num_classes} classes")
    gen = torch.Generator().manual_seed(seed)
    small = F.interpolate(images.x, size=(spec.size, spec.size), mode="area")
    colours = torch.tensor(spec.colours) if spec.colours else None
    x = torch.full((n, 3, spec.height, spec.width), spec.background)
    tokens, objects, sources = [], [], []
    for i in range(n):
        count = counts[int(torch.randint(len(counts), (1,), generator=gen))]
        slots = sorted(torch.randperm(slots_n, generator=gen)[:count].tolist())
        scene, used = [], []
        for slot in slots:
            k = int(torch.randint(len(images), (1,), generator=gen))
            colour = int(torch.randint(len(colours), (1,), generator=gen)) if colours is not None else -1
            dx, dy = (torch.randint(2 * spec.jitter + 1, (2,), generator=gen) - spec.jitter).tolist()
            top, left = spec.corner(slot, dx, dy)
            region = x[i, :, top:top + spec.size, left:left + spec.size]
            if colours is not None:
                # a coloured digit on black: overlapping jittered digits keep the brighter stroke
                region.copy_(torch.maximum(region, small[k] * colours[colour].view(3, 1, 1)))
            else:
                region.copy_(small[k])
            scene.append((int(images.y[k]), colour, slot))
            used.append(k)
        objects.append(tuple(scene))
        sources.append(tuple(used))
        tokens.append(g.encode(g.caption_words(tuple(scene))))
    return CaptionScenes(x.clamp(0, 1), torch.stack(tokens), tuple(objects), g, tuple(sources))
