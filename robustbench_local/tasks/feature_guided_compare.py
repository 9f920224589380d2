"""The comparison of the feature-guided paper: success, L0/L2 distance and queries of the black-box game against
white-box JSMA and C&W L2 and black-box Square, HopSkipJump and Pointwise, all on the same images.

One ``perturbation`` row per attack (metrics over the first ``n_images`` correctly classified test images: success
and perturbation size, not a fixed-budget robust accuracy, so these rows never enter the robust-accuracy
leaderboard), a markdown table ``feature_guided_compare.md`` and a figure of the game's adversarial examples in the
run directory.
Run: ``rbl task=feature_guided_compare dataset=mnist`` (or ``dataset=gtsrb``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from attacks.base import AttackResult, EvasionAttack
from attacks.black_box import ProbabilityOracle
from attacks.feature_guided.figure import save_outcomes_figure
from robustbench_local.attack_specs import build_attack
from rbl_core.io import atomic_write_text
from rbl_core.remeasure import remeasure
from robustbench_local.results import ResultRow, encode_mask
from rbl_core.threat import ThreatModel
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext

L0, L2 = ThreatModel("L0", None), ThreatModel("L2", None)


class _CallCounter(nn.Module):
    """Counts the images every forward pass sees (queries of attacks that do not report their own)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.images += int(x.shape[0])
        return self.model(x)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def select_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` correctly classified images: every attack sees the same ones."""
    with torch.no_grad():
        ok = model(x).argmax(dim=1) == y
    if int(ok.sum()) == 0:
        raise ConfigError("the model classifies none of the test images correctly; nothing to attack")
    return x[ok][:n], y[ok][:n]


def run_attack(model: nn.Module, attack: EvasionAttack, x: torch.Tensor, y: torch.Tensor,
               threat: ThreatModel) -> tuple[dict, AttackResult]:
    """Run one attack and re-measure it: success, pixel L0 and L2 of the successes, queries, time per image."""
    counter = _CallCounter(model).eval()
    start = time.perf_counter()
    res = attack(counter, x, y, threat)
    elapsed = time.perf_counter() - start
    success = remeasure(model, x, y, res.x_adv, threat).success
    x_adv = torch.nan_to_num(res.x_adv.detach().float(), nan=-1.0)
    l0 = L0.distance(x, x_adv)[success].tolist()
    l2 = L2.distance(x, x_adv)[success].tolist()
    if res.queries is not None:
        queries = [int(q) for q in res.queries.tolist()]
    else:
        queries = [counter.images // max(len(y), 1)] * len(y)  # average model calls per image
    out = {"n": len(y), "success_rate": success.sum().item() / max(len(y), 1), "median_L0": _median(l0),
           "median_L2": _median(l2), "mean_L0": float(np.mean(l0)) if l0 else None,
           "mean_L2": float(np.mean(l2)) if l2 else None, "median_queries": _median(queries),
           "model_calls_per_image": counter.images / max(len(y), 1), "time_per_image_s": elapsed / max(len(y), 1),
           "success_mask": encode_mask(success.tolist())}
    outcomes = res.details or []
    first = [o.queries_to_first for o in outcomes if getattr(o, "queries_to_first", None) is not None]
    if first:
        out["median_queries_to_first_adversarial"] = _median(first)
    times = [o.search.time_s for o in outcomes if getattr(o, "search", None) is not None]
    if times:
        out["median_time_per_image_s"] = _median(times)  # per-image search time (batched attacks: mean only)
    return out, res


def format_table(rows: list[tuple[str, str, dict]], dataset: str) -> str:
    """Markdown table of the comparison."""
    def f(v, nd=2):
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = [f"| attack ({dataset}) | access | threat | success % | median L0 | median L2 | median queries | "
             "queries to first adv. | mean s / image | median s / image |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, access, m in rows:
        lines.append(f"| {name} | {access} | {m['threat']} | {100 * m['success_rate']:.1f} | {f(m['median_L0'], 1)} | "
                     f"{f(m['median_L2'])} | {f(m['median_queries'], 0)} | "
                     f"{f(m.get('median_queries_to_first_adversarial'), 0)} | {m['time_per_image_s']:.2f} | "
                     f"{f(m.get('median_time_per_image_s'))} |")
    return "\n".join(lines)


def _threat(name: str, spec: DictConfig, dataset: str, eps_by_dataset: dict) -> ThreatModel:
    """The threat model of ``task.attacks.<name>``: its norm and eps (``by_dataset`` = the table's entry)."""
    if spec.get("norm") is None:
        raise ConfigError(f"task.attacks.{name}.norm is missing (L0 or L2)")
    eps = spec.get("eps")
    if eps == "by_dataset":
        if dataset not in eps_by_dataset.get(name, {}):
            raise ConfigError(f"task.eps_by_dataset.{name} has no entry for {dataset!r}")
        eps = eps_by_dataset[name][dataset]
    return ThreatModel(spec.norm, eps)


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Run every attack of ``cfg.task.attacks`` on the same correctly classified images; one row each, as it ends."""
    t = cfg.task
    if not t.attacks:
        raise ConfigError("task.attacks is empty: list the attacks to compare "
                          "(see conf/task/feature_guided_compare.yaml)")
    torch.manual_seed(cfg.seed)
    model = ctx.load_model()
    data = ctx.load_data("test", n=t.pool)
    x, y = select_images(model, data.x, data.y, t.n_images)
    eps_by_dataset = OmegaConf.to_container(t.eps_by_dataset, resolve=True)
    # validate and build every attack before running any, so a config error costs no attack time
    plan = []
    for name, spec in t.attacks.items():
        if spec is None:
            continue
        threat = _threat(name, spec, cfg.dataset.name, eps_by_dataset)
        built = build_attack(name, spec.get("attack"), threat, where="task.attacks")
        plan.append((built, spec, threat))
    table_rows = []
    for built, spec, threat in plan:
        name = built.name
        metrics, res = run_attack(model, built.attack, x, y, threat)
        metrics.update(threat=str(threat), access=str(spec.get("access", "")))
        if res.details:
            save_outcomes_figure(x, y, res.details, ProbabilityOracle(model)(res.x_adv).argmax(1).tolist(),
                                 Path(ctx.output_dir) / f"{name}_{cfg.dataset.name}_examples.png")
        config = ctx.run_config("dataset", "model", "defense", "seed", attack=OmegaConf.to_container(spec),
                                n_images=t.n_images, pool=t.pool, eps=threat.eps)
        table_rows.append((name, metrics["access"], metrics))
        yield ctx.row("perturbation", name, metrics, config, metrics["time_per_image_s"] * len(y), threat=threat)
    table = format_table(table_rows, cfg.dataset.name)
    atomic_write_text(Path(ctx.output_dir) / "feature_guided_compare.md", table + "\n")
    print(table)
