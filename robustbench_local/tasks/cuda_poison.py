"""Task ``cuda_poison``: CUDA unlearnable data (poison-then-train) on ``cfg.dataset``.

For every training recipe (ERM / Linf-AT / L2-AT, with or without augmentation) it trains the
victim on clean data and on CUDA-poisoned data at each ``mix``, plus the one-kernel control, and
records one ``kind="poisoning"`` row per poisoned run. Writes into ``ctx.output_dir``: the accuracy
vs mix plot, the clean vs poisoned image grid, the poisoned training set (.npz), and the table.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from attacks.cuda.dataset_io import poison_split, save_poisoned
from attacks.cuda.evaluation import CudaEvalResult, VictimConfig, format_table, sweep
from attacks.cuda.plots import plot_accuracy_vs_mix, plot_image_grid
from attacks.cuda.unlearnable import CudaConfig
from robustbench_local.results import ResultRow
from robustbench_local.tasks.base import ConfigError, TaskContext

TRAININGS = {"erm": None, "linf_at": "Linf", "l2_at": "L2"}
_VICTIM_KEYS = ("architecture", "epochs", "lr", "batch_size", "optimizer", "weight_decay", "schedule", "steps")


def _require(tcfg: DictConfig, key: str):  # noqa: ANN202 - any config value
    if key not in tcfg or tcfg[key] is None:
        raise ConfigError(f"task.{key} is missing: see conf/task/cuda_poison.yaml")
    return tcfg[key]


def build_configs(tcfg: DictConfig, seed: int) -> tuple[CudaConfig, list[VictimConfig], tuple[float, ...]]:
    """Turn the task config into the poison config, the victim recipes and the mixes (ConfigError if bad)."""
    cuda_cfg, victim_cfg = _require(tcfg, "cuda"), _require(tcfg, "victim")
    trainings, augments, mixes = _require(tcfg, "trainings"), _require(tcfg, "augment"), _require(tcfg, "mixes")
    unknown = [t for t in trainings if t not in TRAININGS]
    if unknown or not trainings:
        raise ConfigError(f"task.trainings must be a non-empty list from {sorted(TRAININGS)}, got {list(trainings)}")
    at_eps = tcfg.get("at_eps", {}) or {}
    try:
        cuda = CudaConfig(kernel_size=cuda_cfg.kernel_size, blur=cuda_cfg.blur, mix=1.0, key=cuda_cfg.key)
        mixes = tuple(float(m) for m in mixes)
        for m in mixes:
            CudaConfig(cuda.kernel_size, cuda.blur, m, cuda.key)  # validates mix
        base = {k: victim_cfg[k] for k in _VICTIM_KEYS if k in victim_cfg}
        victims = []
        for training in trainings:
            norm = TRAININGS[training]
            if norm is not None and at_eps.get(norm) is None:
                raise ConfigError(f"task.at_eps.{norm} is missing: {training} needs an eps")
            for augment in augments:
                victims.append(VictimConfig(**base, adversarial=norm, eps=float(at_eps[norm]) if norm else 0.0,
                                            augment=bool(augment), seed=seed))
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"task.cuda_poison: {err}") from err
    if not mixes:
        raise ConfigError("task.mixes is empty: give poisoned fractions, e.g. [0.25, 0.5, 1.0]")
    return cuda, victims, mixes


def to_row(result: CudaEvalResult, seed: int) -> ResultRow:
    """One results row: clean-trained acc, poisoned-trained acc, drop (and the rest of the metrics)."""
    v = result.victim
    defense = ("none" if v.adversarial is None else f"{v.adversarial}-AT") + ("+augment" if v.augment else "")
    return ResultRow(kind="poisoning", dataset=result.dataset, model=v.architecture,
                     attack="cuda_one_kernel_control" if result.cuda.same else "cuda",
                     defense=defense, threat_model=v.adversarial or "none",
                     eps=v.eps if v.adversarial else None, seed=seed, metrics=result.metrics(),
                     config=result.config(), time_s=result.time_s)


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Run the CUDA poison-then-train grid configured in ``cfg.task``."""
    tcfg = cfg.task
    cuda, victims, mixes = build_configs(tcfg, ctx.seed)
    train = ctx.load_data("train", n=tcfg.get("n_train"))
    test = ctx.load_data("test", n=cfg.dataset.get("n_test"))
    out = Path(ctx.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    released = poison_split(train, CudaConfig(cuda.kernel_size, cuda.blur, max(mixes), cuda.key))
    if tcfg.get("save_poisoned", True):
        save_poisoned(out / f"cuda_{train.name}_train.npz", released)
    full = released if max(mixes) == 1.0 else poison_split(train, cuda)
    plot_image_grid(train, full.images, out / "cuda_clean_vs_poisoned.png")

    controls = bool(tcfg.get("controls", True))
    log = out / "cuda_results.jsonl"

    def on_result(result: CudaEvalResult) -> None:
        with open(log, "a") as fh:  # partial progress survives an interrupted grid
            fh.write(json.dumps({"config": result.config(), "metrics": result.metrics()}) + "\n")

    results = sweep(train, test, cuda, victims, mixes=mixes, same_control=controls, oracle=controls,
                    on_result=on_result, progress=bool(cfg.get("progress", False)))
    plot_accuracy_vs_mix(results, out / "cuda_accuracy_vs_mix.png")
    table = format_table(results)
    (out / "cuda_table.md").write_text(table + "\n")
    print(table)
    rows = [to_row(r, ctx.seed) for r in results]
    for row in rows:
        row.config["task"] = OmegaConf.to_container(tcfg, resolve=True)
    return rows
