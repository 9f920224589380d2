"""The retraining experiment of Nguyen et al.: does an extra "fooling" class stop fooling images?

Round 0 evolves fooling images against the given C-class model (DNN_1). Round i >= 1 trains
DNN_{i+1} from scratch on the real training data plus every fooling image found so far, labelled
as class C ("fooling"), then evolves again against DNN_{i+1} for the C real classes (fitness is
the real class's probability under the (C+1)-way softmax). Per round we report the fooling
confidence reached, the new model's clean accuracy and how many earlier fooling images it rejects.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from attacks.black_box import ProbabilityOracle
from attacks.fooling.map_elites import Encoding, MapElitesConfig, map_elites_fooling
from attacks.fooling.result import FoolingResult
from rbl_core.data import DataSplit
from rbl_core.training import accuracy
from attacks.base import AttackError
from rbl_core.config import check_ranges, ranged

BuildFn = Callable[[int], nn.Module]                   # num_classes -> untrained model
TrainFn = Callable[[nn.Module, DataSplit, int], nn.Module]   # (model, data, seed) -> trained model


@dataclass
class RetrainingConfig:
    """How many rounds, how many evolutionary runs feed each round's fooling class."""

    rounds: int = ranged(2, ge=1)            # retrained models after the original (DNN_2 .. DNN_{rounds+1})
    runs_per_round: int = ranged(3, ge=1)    # independent MAP-Elites runs per round; each gives <= C images
    balance: bool = True                     # repeat fooling images up to the mean real-class size

    def __post_init__(self) -> None:
        check_ranges(self, AttackError)


@dataclass
class RetrainingRound:
    """Numbers of one round: the model it attacked and what evolution reached against it."""

    round: int
    num_fooling_train: int           # distinct fooling images in this model's training set
    clean_accuracy: float            # on the real test split (arg-max over all outputs)
    rejected_previous: float | None  # share of all earlier fooling images labelled "fooling"
    result: FoolingResult            # best run of this round (highest minimum confidence)
    run_min_confidence: list[float] = field(default_factory=list)
    evaluations: int = 0
    time_s: float = 0.0

    def to_metrics(self) -> dict:
        """JSON summary of the round."""
        m = self.result.to_metrics()
        return {"round": self.round, "num_fooling_train": self.num_fooling_train,
                "clean_accuracy": self.clean_accuracy, "rejected_previous": self.rejected_previous,
                "confidence": m["confidence"], "min_confidence": m["min_confidence"],
                "median_confidence": m["median_confidence"], "classes_at_0.99": m["classes_at_0.99"],
                "classes_at_0.9999": m["classes_at_0.9999"], "run_min_confidence": self.run_min_confidence,
                "round_evaluations": self.evaluations, "round_time_s": round(self.time_s, 3)}


def _distinct(images: torch.Tensor) -> torch.Tensor:
    """Drop repeated images (one genome may hold several cells)."""
    flat = images.flatten(1)
    keep = [i for i in range(len(flat)) if not any(torch.equal(flat[i], flat[j]) for j in range(i))]
    return images[keep]


def with_fooling_class(train: DataSplit, fooling: torch.Tensor, balance: bool, seed: int) -> DataSplit:
    """Training split with the fooling images appended as class C (optionally repeated to balance)."""
    if fooling.shape[1:] != train.x.shape[1:]:
        raise AttackError(f"fooling images have shape {tuple(fooling.shape[1:])}, data {tuple(train.x.shape[1:])}")
    c = train.num_classes
    extra = fooling
    if balance:
        target = max(len(fooling), len(train) // c)
        idx = np.random.default_rng(seed).permutation(np.resize(np.arange(len(fooling)), target))
        extra = fooling[torch.from_numpy(idx)]
    x = torch.cat([train.x, extra])
    y = torch.cat([train.y, torch.full((len(extra),), c, dtype=torch.long)])
    return DataSplit(x, y, c + 1, train.name, f"{train.split}+fooling", tuple(train.class_names) + ("fooling",))


def _evolve_round(model: nn.Module, num_real: int, encoding: Encoding, me_config: MapElitesConfig,
                  runs: int, seed: int) -> tuple[list[FoolingResult], int]:
    oracle = ProbabilityOracle(model)
    # Cells exist only for the real classes; their probabilities still come from the full softmax.
    real_only = lambda x: oracle(x)[:, :num_real]  # noqa: E731
    results = [map_elites_fooling(real_only, encoding, num_real, me_config, seed=seed + r) for r in range(runs)]
    return results, oracle.queries


def retraining_experiment(model: nn.Module, train: DataSplit, test: DataSplit, encoding: Encoding,
                          build_fn: BuildFn, train_fn: TrainFn, me_config: MapElitesConfig | None = None,
                          config: RetrainingConfig | None = None, seed: int = 0,
                          log: Callable[[str], None] | None = None) -> list[RetrainingRound]:
    """Run round 0 on `model`, then `config.rounds` retrain-and-evolve rounds; returns every round."""
    me_config = me_config or MapElitesConfig()
    config = config or RetrainingConfig()
    num_real = train.num_classes
    rounds: list[RetrainingRound] = []
    pool = torch.empty((0, *train.x.shape[1:]))
    current, clean_acc, rejected = model.eval(), accuracy(model, test), None
    for i in range(config.rounds + 1):
        start = time.perf_counter()
        if i > 0:
            data = with_fooling_class(train, pool, config.balance, seed + i)
            torch.manual_seed(seed + i)
            current = train_fn(build_fn(num_real + 1), data, seed + i).eval()
            clean_acc = accuracy(current, test)
            with torch.no_grad():
                rejected = float((current(pool).argmax(1) == num_real).float().mean())
        results, queries = _evolve_round(current, num_real, encoding, me_config, config.runs_per_round,
                                         seed + 1000 * i)
        best = max(results, key=lambda r: float(r.confidence.min()))
        rounds.append(RetrainingRound(
            round=i, num_fooling_train=len(pool), clean_accuracy=clean_acc, rejected_previous=rejected,
            result=best, run_min_confidence=[float(r.confidence.min()) for r in results],
            evaluations=queries, time_s=time.perf_counter() - start))
        if log:
            log(f"retraining round {i}: {rounds[-1].to_metrics()}")
        pool = torch.cat([pool, *[_distinct(r.images) for r in results]])
    return rounds
