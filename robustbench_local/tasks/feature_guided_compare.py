"""The comparison of the feature-guided paper: success, L0/L2 distance and queries of the black-box game against
white-box JSMA and C&W L2 and black-box Square, HopSkipJump and Pointwise, all on the same images.

One ``evasion`` row per attack (metrics over the first ``n_images`` correctly classified test images), a markdown
table ``feature_guided_compare.md`` and a figure of the game's adversarial examples in the run directory.
Run: ``rbl task=feature_guided_compare dataset=mnist`` (or ``dataset=gtsrb``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from attacks.base import EvasionAttack
from robustbench_local.evaluation import encode_mask
from robustbench_local.results import ResultRow
from robustbench_local.tasks.base import ConfigError, TaskContext
from robustbench_local.core.threat import ThreatModel

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
               threat: ThreatModel) -> dict:
    """Run one attack and re-measure it: success, pixel L0 and L2 of the successes, queries, time per image."""
    counter = _CallCounter(model).eval()
    start = time.perf_counter()
    res = attack(counter, x, y, threat)
    elapsed = time.perf_counter() - start
    x_adv = torch.nan_to_num(res.x_adv.detach().float(), nan=-1.0)
    with torch.no_grad():
        success = (model(x_adv.clamp(0, 1)).argmax(dim=1) != y) & threat.contains(x, x_adv)
    l0 = L0.distance(x, x_adv)[success].tolist()
    l2 = L2.distance(x, x_adv)[success].tolist()
    if res.queries is not None:
        queries = [int(q) for q in res.queries.tolist()]
    else:
        queries = [counter.images // max(len(y), 1)] * len(y)  # average model calls per image
    out = {"n": len(y), "success_rate": float(success.float().mean()), "median_L0": _median(l0),
           "median_L2": _median(l2), "mean_L0": float(np.mean(l0)) if l0 else None,
           "mean_L2": float(np.mean(l2)) if l2 else None, "median_queries": _median(queries),
           "model_calls_per_image": counter.images / max(len(y), 1), "time_per_image_s": elapsed / max(len(y), 1),
           "mask": encode_mask(success.tolist())}
    outcomes = getattr(attack, "last_outcomes", [])
    first = [o.queries_to_first for o in outcomes if o.queries_to_first is not None]
    if first:
        out["median_queries_to_first_adversarial"] = _median(first)
    times = [o.search.time_s for o in outcomes if o.search is not None]
    if times:
        out["median_time_per_image_s"] = _median(times)  # per-image search time (batched attacks: mean only)
    return out


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


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Run every attack of ``cfg.task.attacks`` on the same correctly classified images; one row each."""
    t = cfg.task
    specs = t.get("attacks")
    if not specs:
        raise ConfigError("task.attacks is empty: list the attacks to compare "
                          "(see conf/task/feature_guided_compare.yaml)")
    torch.manual_seed(cfg.seed)
    model = ctx.load_model()
    data = ctx.load_data("test", n=int(t.get("pool", 500)))
    x, y = select_images(model, data.x, data.y, int(t.n_images))
    eps_by_dataset = OmegaConf.to_container(t.get("eps_by_dataset") or {}, resolve=True)
    # validate and build every attack before running any, so a config error costs no attack time
    plan = []
    for name, spec in specs.items():
        if spec is None:
            continue
        norm = spec.get("norm")
        if norm is None:
            raise ConfigError(f"task.attacks.{name}.norm is missing (L0 or L2)")
        eps = spec.get("eps")
        if eps == "by_dataset":
            if cfg.dataset.name not in eps_by_dataset.get(name, {}):
                raise ConfigError(f"task.eps_by_dataset.{name} has no entry for {cfg.dataset.name!r}")
            eps = eps_by_dataset[name][cfg.dataset.name]
        threat = ThreatModel(norm, eps)
        if spec.get("attack") is None:
            raise ConfigError(f"task.attacks.{name}.attack is missing (a _target_ building an EvasionAttack)")
        attack = instantiate(spec.attack, name=name)
        if not isinstance(attack, EvasionAttack):
            raise ConfigError(f"task.attacks.{name}.attack built a {type(attack).__name__}, not an EvasionAttack")
        attack.check(x[:1], y[:1], threat)
        plan.append((name, spec, norm, eps, threat, attack))
    rows, table_rows = [], []
    for name, spec, norm, eps, threat, attack in plan:
        metrics = run_attack(model, attack, x, y, threat)
        metrics.update(threat=str(threat), access=str(spec.get("access", "")))
        if hasattr(attack, "save_figure") and getattr(attack, "last_outcomes", None):
            attack.save_figure(x, y, Path(ctx.output_dir) / f"{name}_{cfg.dataset.name}_examples.png",
                               _oracle_for_figure(model))
        config = {"task": "feature_guided_compare", "dataset": cfg.dataset.name, "model": cfg.model.name,
                  "n_images": int(t.n_images), "pool": int(t.get("pool", 500)), "seed": int(cfg.seed),
                  "attack": OmegaConf.to_container(spec, resolve=False), "eps": eps}
        rows.append(ResultRow(kind="evasion", dataset=cfg.dataset.name, model=cfg.model.name,
                              defense=ctx.defense_name, attack=name, threat_model=norm, eps=eps, seed=int(cfg.seed),
                              metrics=metrics, config=config, time_s=metrics["time_per_image_s"] * len(y)))
        table_rows.append((name, metrics["access"], metrics))
    table = format_table(table_rows, cfg.dataset.name)
    out = Path(ctx.output_dir) / "feature_guided_compare.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    print(table)
    return rows


def _oracle_for_figure(model: nn.Module):
    from attacks.black_box import ProbabilityOracle

    return ProbabilityOracle(model)
