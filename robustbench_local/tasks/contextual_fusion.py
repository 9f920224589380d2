"""Contextual fusion (Akumalla, Haney, Bazhenov 2020) on MNIST digits composited onto texture scenes.

The models are zoo recipes (``robustbench_local/zoo/recipes_fusion.py``): the task builds them from its own
keys (stream epochs and train images, head steps, alpha, seed); with the defaults they are the registered
``fg_only`` / ``bg_only`` / ``fusion`` / ``fusion_reg`` of every scene set, so the same weights serve
``task=evaluate`` and the leaderboard. The attacks are the configured ``attack`` group (the preset uses
``attack=fusion``: Foolbox FGSM and PGD, AutoAttack).

Yields one kind="fusion" row per (scene set, fused model, threat, attack, eps or sigma) as it is measured, then
writes plots (accuracy vs eps, vs sigma, vs p, per-class gain vs class p) and a markdown table into the run
directory.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from omegaconf import DictConfig
from scipy.stats import spearmanr

from defenses.contextual_fusion.evaluation import evaluate_suite
from defenses.contextual_fusion.scenes import class_probabilities
from rbl_core.io import atomic_write_text
from rbl_core.threat import ThreatModel
from robustbench_local.attack_specs import build_attacks
from robustbench_local.data import load_dataset
from robustbench_local.data_scenes import SCENE_SETS, load_scenes
from robustbench_local.results import ResultRow
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from robustbench_local.tasks.contextual_fusion_report import markdown_table, plots
from robustbench_local.zoo.cache import load_or_train
from robustbench_local.zoo.recipes_fusion import DEFAULT_ALPHA, head_recipe, stream_recipes


def fused_name(alpha: float) -> str:
    """The zoo name of the fused model with penalty ``alpha``."""
    return "fusion" if alpha == 0 else "fusion_reg" if alpha == DEFAULT_ALPHA else f"fusion_a{alpha:g}"


def _models(t: DictConfig, ctx: TaskContext, scene_set: str) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    fg_stream, bg_stream = stream_recipes(t.n_train, t.epochs, t.seed)

    def load(kind: str, **kw: object) -> torch.nn.Module:
        recipe = head_recipe(kind, scene_set, fg=fg_stream, bg=bg_stream, head_steps=t.head_steps, **kw)
        return load_or_train(recipe, ctx.cache_dir, ctx.data_root).to(ctx.device)

    fused = {fused_name(float(a)): load("fusion", alpha=float(a), name=fused_name(float(a))) for a in t.alpha}
    return load("fg_only"), load("bg_only"), fused


def _gain_context_corr(per_class: dict, class_p: list[float]) -> float | None:
    gains = [(class_p[int(c)], row["gain"]) for c, row in per_class.items() if "gain" in row]
    if len(gains) < 3 or len({g for _, g in gains}) < 2:
        return None
    return round(float(spearmanr([p for p, _ in gains], [g for _, g in gains]).statistic), 4)


def _check(cfg: DictConfig) -> None:
    if cfg.dataset.name != "mnist":
        raise ConfigError(f"task=contextual_fusion composites MNIST digits; set dataset=mnist (got {cfg.dataset.name!r})")


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Load (or train) the streams and heads of every scene set, then yield fusion rows for every threat."""
    _check(cfg)
    t = cfg.task
    eps = [float(e) for e in t.eps]
    attacks = build_attacks(cfg.attack.attacks, ThreatModel("Linf", max(eps)))
    digits = load_dataset("mnist", "test", root=ctx.data_root)
    alphas = {fused_name(float(a)): float(a) for a in t.alpha}
    rows: list[ResultRow] = []
    for scene_set in t.scene_sets:
        scenes = load_scenes(scene_set, "test", digits).subset(t.n_test)
        fg, bg, fused = _models(t, ctx, scene_set)
        probs = [round(float(v), 6) for v in class_probabilities(SCENE_SETS[scene_set].p)]
        varies = len(set(probs)) > 1
        start = time.perf_counter()
        suite = evaluate_suite(fg, bg, fused, scenes.composite.to(ctx.device), scenes.y.to(ctx.device),
                               scenes.mask.to(ctx.device),
                               attacks={name: spec.attack for name, spec in attacks.items()}, eps=eps,
                               sigma=[float(s) for s in t.sigma])
        for res in suite:
            name = res.pop("model")
            alpha = alphas[name]
            metrics = {**res, "p": round(sum(probs) / len(probs), 4), "alpha": alpha, "fg_share": fused[name].fg_share()}
            if varies:
                metrics.update(class_p=probs, gain_context_corr=_gain_context_corr(res["per_class"], probs))
            level = res["sigma"] if res["threat"] == "blur" else res["eps"]
            spec = attacks.get(res["attack"])
            config = ctx.run_config("dataset", "task", "seed", scene_set=scene_set, model=name, threat=res["threat"],
                                    attack=spec.config if spec else res["attack"], level=level)
            row = ctx.row("fusion", f"{res['threat']}:{res['attack']}", metrics, config, time.perf_counter() - start,
                          dataset=scene_set, model=name, defense="contextual_fusion",
                          threat_model="blur" if res["threat"] == "blur" else "Linf", eps=level)
            start = time.perf_counter()
            rows.append(row)
            yield row
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    plots(rows, ctx.output_dir)
    table = markdown_table(rows)
    atomic_write_text(ctx.output_dir / "contextual_fusion.md", table)
    print(table)

