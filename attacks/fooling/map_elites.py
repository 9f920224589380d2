"""MAP-Elites for fooling images (Nguyen, Yosinski & Clune, CVPR 2015): one archive cell per class.

The fitness of an image in cell c is the softmax probability p_c(image). Every child is compared
with the elite of *every* class, so one child can take over several cells at once. The search is
black-box: it only calls a probability oracle (attacks/black_box.py's ProbabilityOracle).

We use our own archive instead of pyribs: CPPN genomes are variable-size graphs, which pyribs'
fixed-length float solution arrays cannot hold, and the "one child fills many cells" insertion
is a single column-wise arg-max here, where pyribs would need every child added once per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from attacks.fooling.result import DEFAULT_THRESHOLDS, FoolingResult, ThresholdTracker
from attacks.base import AttackError
from rbl_core.config import CONFIDENCE, PROBABILITY, check_ranges, ranged

Oracle = Callable[[torch.Tensor], torch.Tensor]


class Encoding(Protocol):
    """How genomes are created, varied and turned into images (direct pixels or CPPN)."""

    name: str
    image_shape: tuple[int, int, int]

    def random(self, n: int, rng: np.random.Generator) -> list[Any]: ...
    def crossover(self, a: list[Any], b: list[Any], rng: np.random.Generator) -> tuple[list[Any], list[Any]]: ...
    def mutate(self, genomes: list[Any], rng: np.random.Generator) -> list[Any]: ...
    def render(self, genomes: list[Any]) -> torch.Tensor: ...


class ClassArchive:
    """One elite per class; a candidate enters every cell whose class probability it beats."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.fitness = np.full(num_classes, -np.inf)
        self.genomes: list[Any] = [None] * num_classes
        self.images: torch.Tensor | None = None
        self.probs: np.ndarray | None = None       # full softmax vector of each elite

    def add(self, genomes: Sequence[Any], images: torch.Tensor, probs: np.ndarray) -> int:
        """Insert a batch; returns how many cells improved (strictly better probability)."""
        if probs.shape != (len(genomes), self.num_classes):
            raise AttackError(f"probs must have shape ({len(genomes)}, {self.num_classes}), got {probs.shape}")
        if self.images is None:
            self.images = torch.zeros((self.num_classes, *images.shape[1:]), dtype=images.dtype)
            self.probs = np.zeros((self.num_classes, self.num_classes))
        # The best child per column is what sequential insertion would keep (first one on ties).
        best = probs.argmax(axis=0)
        best_p = probs[best, np.arange(self.num_classes)]
        improved = np.flatnonzero(best_p > self.fitness)
        for c in improved:
            b = int(best[c])
            self.fitness[c] = best_p[c]
            self.genomes[c] = genomes[b]
            self.images[c] = images[b]
            self.probs[c] = probs[b]
        return len(improved)

    def filled(self) -> np.ndarray:
        """Indices of non-empty cells."""
        return np.flatnonzero(np.isfinite(self.fitness))


@dataclass
class MapElitesSettings:
    """The search itself, what a user tunes (``task.map_elites``); reference MNIST defaults."""

    init_size: int = ranged(200, ge=1)
    batch_size: int = ranged(200, ge=2)      # children per generation (pop_size in sferes)
    generations: int = ranged(1000, ge=0)
    cross_rate: float = ranged(0.5, **PROBABILITY)   # probability that a parent pair is recombined (SBX)
    max_evaluations: int | None = ranged(None, ge=1)
    time_budget_s: float | None = ranged(None, gt=0)
    stop_confidence: float | None = ranged(0.9999, **CONFIDENCE)   # stop once every cell reaches it (None: all)


@dataclass
class MapElitesConfig(MapElitesSettings):
    """The search settings plus what is recorded and printed along the way."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    log_every: int = 0               # print progress every n generations (0 = silent)
    history_every: int = 1

    def __post_init__(self) -> None:
        check_ranges(self, AttackError)
        if self.stop_confidence is not None and self.stop_confidence not in self.thresholds:
            self.thresholds = tuple(sorted(set(self.thresholds) | {self.stop_confidence}))


def _query(oracle: Oracle, images: torch.Tensor, num_classes: int) -> np.ndarray:
    probs = oracle(images)
    if probs.ndim != 2 or probs.shape != (images.shape[0], num_classes):
        raise AttackError(f"oracle returned shape {tuple(probs.shape)}, expected ({images.shape[0]}, {num_classes})")
    return probs.detach().cpu().double().numpy()


def map_elites_fooling(oracle: Oracle, encoding: Encoding, num_classes: int,
                       config: MapElitesConfig | None = None, seed: int = 0) -> FoolingResult:
    """Evolve one fooling image per class with MAP-Elites; only `oracle(images) -> probs` is used."""
    config = config or MapElitesConfig()
    rng = np.random.default_rng(seed)
    archive = ClassArchive(num_classes)
    tracker = ThresholdTracker(num_classes, config.thresholds)
    history: list[dict] = []
    evaluations = 0

    def evaluate(genomes: list[Any], step: int) -> None:
        nonlocal evaluations
        images = encoding.render(genomes)
        probs = _query(oracle, images, num_classes)
        evaluations += len(genomes)
        archive.add(genomes, images, probs)
        tracker.update(archive.fitness, evaluations, step)
        if config.history_every and step % config.history_every == 0:
            history.append({"step": step, "evaluations": evaluations, "time_s": round(tracker.elapsed(), 4),
                            "min": float(archive.fitness.min()), "mean": float(archive.fitness.mean())})

    def budget_left() -> bool:
        if config.stop_confidence is not None and tracker.all_reached(config.stop_confidence):
            return False
        if config.max_evaluations is not None and evaluations + config.batch_size > config.max_evaluations:
            return False
        return config.time_budget_s is None or tracker.elapsed() < config.time_budget_s

    evaluate(encoding.random(config.init_size, rng), 0)
    generation = 0
    while generation < config.generations and budget_left():
        generation += 1
        filled = archive.filled()
        n_pairs = config.batch_size // 2
        # Parents are drawn uniformly over cells, as in sferes' map_elite (a genome holding several
        # cells is proportionally more likely to be picked).
        pa = [archive.genomes[c] for c in rng.choice(filled, n_pairs)]
        pb = [archive.genomes[c] for c in rng.choice(filled, n_pairs)]
        cross = rng.random(n_pairs) < config.cross_rate
        ca, cb = list(pa), list(pb)
        if cross.any():
            idx = np.flatnonzero(cross)
            xa, xb = encoding.crossover([pa[i] for i in idx], [pb[i] for i in idx], rng)
            for k, i in enumerate(idx):
                ca[i], cb[i] = xa[k], xb[k]
        evaluate(encoding.mutate(ca + cb, rng), generation)
        if config.log_every and generation % config.log_every == 0:
            print(f"[{encoding.name}] gen {generation} evals {evaluations} "
                  f"min {archive.fitness.min():.6f} mean {archive.fitness.mean():.6f} t {tracker.elapsed():.1f}s")

    images = archive.images
    probs = torch.as_tensor(archive.probs)
    return FoolingResult(
        method=f"map_elites_{encoding.name}", images=images.clone(),
        confidence=torch.as_tensor(archive.fitness.copy()), predicted=probs.argmax(dim=1),
        evaluations=evaluations, steps=generation, time_s=tracker.elapsed(),
        thresholds=tracker.thresholds, first_evaluation=tracker.first_evaluation,
        first_step=tracker.first_step, first_time=tracker.first_time, history=history,
        genomes=list(archive.genomes),
        extra={"oracle_queries": int(getattr(oracle, "queries", evaluations))},
    )
