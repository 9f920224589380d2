"""The CUDA paper's poison-then-train protocol: train a victim on the released (poisoned) training
set, test it on the clean test set, and compare with the same training on clean data.

Controls from the paper: ``CudaConfig(same=True)`` (one kernel for every class: no label-correlated
shortcut, accuracy must not collapse) and the *oracle* (the CUDA-trained victim evaluated on test
images blurred with the class kernels of their true labels: the shortcut restores accuracy).
Augmentation, when asked for, happens inside the training loop, i.e. after poisoning.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator

import torch
from torch import nn

from attacks.unlearnable.unlearnable import CudaConfig, poison_images
from rbl_core.config import check_ranges, ranged
from rbl_core.data import DataSplit
from rbl_core.architectures import build
from rbl_core.training import accuracy, train_classifier

__all__ = ["CUDA_TRAININGS", "VictimConfig", "VictimRecipe", "CleanBaseline", "CudaEvalResult", "train_victim", "clean_baseline",
           "poisoned_view", "evaluate_cuda", "sweep", "result_label", "format_table"]

CUDA_TRAININGS = {"erm": None, "linf_at": "Linf", "l2_at": "L2"}   # training name -> adversarial-training norm
_ADVERSARIAL = tuple(CUDA_TRAININGS.values())


@dataclass(frozen=True)
class VictimRecipe:
    """How the victim is trained (the same recipe for the clean and the poisoned run)."""

    architecture: str = "cnn_bn_small"
    epochs: int = ranged(30, ge=1)
    lr: float = ranged(0.05, gt=0)
    batch_size: int = ranged(128, ge=1)
    optimizer: str = ranged("sgd", choices=("sgd", "adam"))
    weight_decay: float = ranged(5e-4, ge=0)
    schedule: str = "onecycle"
    steps: int = ranged(7, ge=1)     # PGD steps of adversarial training


@dataclass(frozen=True)
class VictimConfig(VictimRecipe):
    """One training run: the recipe plus its adversarial training, augmentation and seed."""

    adversarial: str | None = None   # None (ERM), "Linf" or "L2" PGD adversarial training
    eps: float = 0.0
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.adversarial not in _ADVERSARIAL:
            raise ValueError(f"CUDA victim: adversarial must be one of {_ADVERSARIAL}, got {self.adversarial!r}")
        if self.adversarial is not None and not self.eps > 0:
            raise ValueError(f"CUDA victim: adversarial training ({self.adversarial}) needs eps > 0, got {self.eps}")
        check_ranges(self)

    @property
    def training_label(self) -> str:
        """Short name of the training method: ERM, Linf-AT or L2-AT."""
        return "ERM" if self.adversarial is None else f"{self.adversarial}-AT"


@dataclass
class CleanBaseline:
    """The victim trained on clean data (shared by every poisoned run with the same recipe)."""

    model: nn.Module
    train_acc: float
    test_acc: float
    time_s: float


@dataclass
class CudaEvalResult:
    """One poison-then-train measurement."""

    dataset: str
    cuda: CudaConfig
    victim: VictimConfig
    n_train: int
    n_test: int
    clean_trained_acc: float       # clean-trained victim on the clean test set
    clean_train_acc: float         # ... on its own (clean) training set
    poisoned_trained_acc: float    # CUDA-trained victim on the clean test set
    poisoned_train_acc: float      # ... on its own (poisoned) training set: did it fit?
    oracle_acc: float | None       # CUDA-trained victim on class-kernel-blurred test images
    time_s: float                  # poisoning + training the CUDA victim (baseline not included)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        """Accuracy points lost by training on the poisoned set."""
        return self.clean_trained_acc - self.poisoned_trained_acc

    @property
    def ratio(self) -> float:
        """Poisoned-trained over clean-trained test accuracy (the paper's effect: far below 1)."""
        return self.poisoned_trained_acc / max(self.clean_trained_acc, 1e-12)

    def metrics(self) -> dict[str, Any]:
        """JSON-serialisable numbers for a results row."""
        out = {"clean_trained_acc": self.clean_trained_acc, "poisoned_trained_acc": self.poisoned_trained_acc,
               "drop": self.drop, "ratio": self.ratio, "clean_train_acc": self.clean_train_acc,
               "poisoned_train_acc": self.poisoned_train_acc, "oracle_acc": self.oracle_acc,
               "n_train": self.n_train, "n_test": self.n_test}
        out.update(self.extra)
        out["time_s"] = self.time_s
        return out

    @classmethod
    def from_record(cls, config: dict[str, Any], metrics: dict[str, Any]) -> "CudaEvalResult":
        """Rebuild a result from its ``config()`` and ``metrics()`` (e.g. a JSON line)."""
        known = {"clean_trained_acc", "poisoned_trained_acc", "drop", "ratio", "clean_train_acc",
                 "poisoned_train_acc", "oracle_acc", "n_train", "n_test", "time_s"}
        return cls(dataset=config["dataset"], cuda=CudaConfig(**config["cuda"]), victim=VictimConfig(**config["victim"]),
                   n_train=int(config["n_train"]), n_test=int(config["n_test"]),
                   clean_trained_acc=metrics["clean_trained_acc"], clean_train_acc=metrics["clean_train_acc"],
                   poisoned_trained_acc=metrics["poisoned_trained_acc"],
                   poisoned_train_acc=metrics["poisoned_train_acc"], oracle_acc=metrics.get("oracle_acc"),
                   time_s=float(metrics.get("time_s", 0.0)),
                   extra={k: v for k, v in metrics.items() if k not in known})

    def config(self) -> dict[str, Any]:
        """What was run (the idempotency key of a results row)."""
        return {"dataset": self.dataset, "n_train": self.n_train, "n_test": self.n_test,
                "cuda": asdict(self.cuda), "victim": asdict(self.victim)}


def train_victim(train: DataSplit, victim: VictimConfig, progress: bool = False,
                 device: torch.device | str = "cpu") -> nn.Module:
    """Build ``victim.architecture`` from the zoo and train it on ``train`` on ``device`` (eval mode on return)."""
    torch.manual_seed(victim.seed)
    # Built on the CPU (the seed draws the same initial weights everywhere), then moved.
    model = build(victim.architecture, train.input_shape, train.num_classes).to(device)
    return train_classifier(model, train, epochs=victim.epochs, lr=victim.lr, batch_size=victim.batch_size,
                            seed=victim.seed, adversarial=victim.adversarial, eps=victim.eps, steps=victim.steps,
                            optimizer=victim.optimizer, schedule=victim.schedule,
                            weight_decay=victim.weight_decay, augment=victim.augment, progress=progress)


def clean_baseline(train: DataSplit, test: DataSplit, victim: VictimConfig, progress: bool = False,
                   device: torch.device | str = "cpu") -> CleanBaseline:
    """Train the victim on the clean training set and measure it."""
    start = time.perf_counter()
    model = train_victim(train, victim, progress, device)
    return CleanBaseline(model, accuracy(model, train), accuracy(model, test), time.perf_counter() - start)


def poisoned_view(data: DataSplit, config: CudaConfig) -> DataSplit:
    """``data`` with CUDA applied (uint8-quantised, back as float [0, 1])."""
    images = poison_images(data.x, data.y, data.num_classes, config)
    return DataSplit(images.as_float(), images.y, data.num_classes, data.name, data.split, data.class_names)


def _check_pair(train: DataSplit, test: DataSplit) -> None:
    if train.input_shape != test.input_shape or train.num_classes != test.num_classes:
        raise ValueError(f"CUDA: train {train.input_shape}/{train.num_classes} classes and test "
                         f"{test.input_shape}/{test.num_classes} classes do not match")


def evaluate_cuda(train: DataSplit, test: DataSplit, cuda: CudaConfig, victim: VictimConfig,
                  baseline: CleanBaseline | None = None, oracle: bool = True,
                  progress: bool = False, device: torch.device | str = "cpu") -> CudaEvalResult:
    """Poison ``train`` with ``cuda``, train the victim on it, test on clean ``test`` vs the clean baseline."""
    _check_pair(train, test)
    if baseline is None:
        baseline = clean_baseline(train, test, victim, progress, device)
    start = time.perf_counter()
    poisoned_train = poisoned_view(train, cuda)
    model = train_victim(poisoned_train, victim, progress, device)
    oracle_acc = None
    if oracle:
        # every test image blurred with its own class kernel (mix = 1): the shortcut the victim learned
        oracle_cfg = replace(cuda, mix=1.0)
        oracle_acc = accuracy(model, poisoned_view(test, oracle_cfg))
    return CudaEvalResult(
        dataset=train.name, cuda=cuda, victim=victim, n_train=len(train), n_test=len(test),
        clean_trained_acc=baseline.test_acc, clean_train_acc=baseline.train_acc,
        poisoned_trained_acc=accuracy(model, test), poisoned_train_acc=accuracy(model, poisoned_train),
        oracle_acc=oracle_acc, time_s=time.perf_counter() - start,
        extra={"num_classes": int(train.num_classes)})


def sweep(train: DataSplit, test: DataSplit, cuda: CudaConfig, victims: list[VictimConfig],
          mixes: tuple[float, ...] = (1.0,), same_control: bool = True, oracle: bool = True,
          progress: bool = False, device: torch.device | str = "cpu") -> Iterator[CudaEvalResult]:
    """The paper's grid: for each victim recipe one clean baseline, then CUDA at every mix and the
    one-kernel control (at mix 1), each result yielded as soon as it is measured; victims train on ``device``."""
    for victim in victims:
        baseline = clean_baseline(train, test, victim, progress, device)
        configs = [replace(cuda, mix=float(m), same=False) for m in mixes]
        if same_control:
            configs.append(replace(cuda, mix=1.0, same=True))
        for cfg in configs:
            result = evaluate_cuda(train, test, cfg, victim, baseline=baseline, oracle=oracle, progress=progress,
                                   device=device)
            result.extra["clean_baseline_time_s"] = baseline.time_s
            yield result


def result_label(result: CudaEvalResult) -> str:
    """Row label: control name or 'CUDA mix=m'."""
    return "one kernel (control)" if result.cuda.same else f"CUDA mix={result.cuda.mix:g}"


def format_table(results: list[CudaEvalResult]) -> str:
    """Markdown table: training, augmentation, poison, clean-trained / poisoned-trained acc, drop, oracle."""
    lines = ["| data (train/test) | epochs | training | aug | poison | train acc (poisoned) | clean-trained acc "
             "| poisoned-trained acc | drop | ratio | oracle acc |", "|" + "---|" * 11]
    for r in results:
        oracle = "-" if r.oracle_acc is None else f"{100 * r.oracle_acc:.1f}"
        lines.append(f"| {r.dataset} ({r.n_train}/{r.n_test}) | {r.victim.epochs} | {r.victim.training_label} | "
                     f"{'yes' if r.victim.augment else 'no'} | {result_label(r)} | {100 * r.poisoned_train_acc:.1f} | "
                     f"{100 * r.clean_trained_acc:.1f} | {100 * r.poisoned_trained_acc:.1f} | "
                     f"{100 * r.drop:.1f} | {r.ratio:.2f} | {oracle} |")
    return "\n".join(lines)
