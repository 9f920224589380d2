"""Task ``unlearnable_poison``: CUDA unlearnable data (poison-then-train) on ``cfg.dataset``.

For every training recipe (ERM / Linf-AT / L2-AT, with or without augmentation) it trains the
victim on clean data and on CUDA-poisoned data at each ``mix``, plus the one-kernel control, and
records one ``kind="poisoning"`` row per poisoned run. Writes into ``ctx.output_dir``: the accuracy
vs mix plot, the clean vs poisoned image grid, the poisoned training set (.npz), and the table.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from attacks.unlearnable.dataset_io import poison_split, save_poisoned
from attacks.unlearnable.evaluation import CUDA_TRAININGS, CudaEvalResult, VictimConfig, format_table, sweep
from attacks.unlearnable.plots import plot_accuracy_vs_mix, plot_image_grid
from attacks.unlearnable.unlearnable import CudaConfig
from rbl_core.io import atomic_write_text
from robustbench_local.results import ResultRow
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext


def build_configs(tcfg: DictConfig, seed: int) -> tuple[CudaConfig, list[VictimConfig], tuple[float, ...]]:
    """Turn the task config into the poison config, the victim recipes and the mixes (ConfigError if bad)."""
    trainings = list(tcfg.trainings)
    unknown = [t for t in trainings if t not in CUDA_TRAININGS]
    if unknown or not trainings:
        raise ConfigError(f"task.trainings must be a non-empty list from {sorted(CUDA_TRAININGS)}, got {trainings}")
    try:
        cuda = CudaConfig(**tcfg.cuda)
        mixes = tuple(float(m) for m in tcfg.mixes)
        for m in mixes:
            replace(cuda, mix=m)  # validates mix
        victims = []
        for training in trainings:
            norm = CUDA_TRAININGS[training]
            eps = tcfg.at_eps[norm] if norm is not None else 0.0
            if eps is None:
                raise ConfigError(f"task.at_eps.{norm} is missing: {training} needs an eps")
            for augment in tcfg.augment:
                victims.append(VictimConfig(**tcfg.victim, adversarial=norm, eps=float(eps), augment=bool(augment),
                                            seed=seed))
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"task.unlearnable_poison: {err}") from err
    if not mixes:
        raise ConfigError("task.mixes is empty: give poisoned fractions, e.g. [0.25, 0.5, 1.0]")
    return cuda, victims, mixes


def to_row(result: CudaEvalResult, ctx: TaskContext) -> ResultRow:
    """One results row: clean-trained acc, poisoned-trained acc, drop (and the rest of the metrics)."""
    v = result.victim
    defense = ("none" if v.adversarial is None else f"{v.adversarial}-AT") + ("+augment" if v.augment else "")
    return ctx.row("poisoning", "cuda_one_kernel_control" if result.cuda.same else "cuda", result.metrics(),
                   ctx.run_config("task", "seed", run=result.config()), result.time_s, dataset=result.dataset,
                   model=v.architecture, defense=defense, threat_model=v.adversarial or "none",
                   eps=v.eps if v.adversarial else None)


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Run the CUDA poison-then-train grid configured in ``cfg.task``; one row per poisoned run, as it ends."""
    tcfg = cfg.task
    cuda, victims, mixes = build_configs(tcfg, ctx.seed)
    train = ctx.load_data("train", n=tcfg.n_train)
    test = ctx.load_data("test", n=cfg.dataset.n_test)
    out = Path(ctx.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    released = poison_split(train, replace(cuda, mix=max(mixes)))
    if tcfg.save_poisoned:
        save_poisoned(out / f"cuda_{train.name}_train.npz", released)
    full = released if max(mixes) == 1.0 else poison_split(train, cuda)
    plot_image_grid(train, full.images, out / "cuda_clean_vs_poisoned.png")

    results = []
    for result in sweep(train, test, cuda, victims, mixes=mixes, same_control=tcfg.controls, oracle=tcfg.controls,
                        progress=cfg.progress, device=ctx.device):
        results.append(result)
        # Recorded as each run ends, so an interrupted grid keeps what it measured.
        yield to_row(result, ctx)
    plot_accuracy_vs_mix(results, out / "cuda_accuracy_vs_mix.png")
    table = format_table(results)
    atomic_write_text(out / "cuda_table.md", table + "\n")
    print(table)
