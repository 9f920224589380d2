"""Fooling-image tasks (Nguyen, Yosinski & Clune, CVPR 2015): MAP-Elites, gradient ascent, retraining.

`cfg.task.method` picks the search: `map_elites` (encoding `direct` or `cppn`, black-box through a
query-counting ProbabilityOracle), `gradient_ascent` (white-box) or `retraining` (extra "fooling"
class, retrain, evolve again). Rows have kind="fooling"; a PNG grid of the best image per class
(with its confidence) and an .npz of the images are written to the run directory.
"""
from __future__ import annotations

import time
from typing import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from attacks.black_box import ProbabilityOracle
from attacks.fooling.cppn import CPPNEncoding
from attacks.fooling.direct_encoding import DirectEncoding
from attacks.fooling.gradient_ascent import GradientAscentConfig, gradient_ascent_fooling
from attacks.fooling.map_elites import Encoding, MapElitesConfig, map_elites_fooling
from attacks.fooling.result import (FoolingResult, nearest_same_class_distance,
                                    real_nearest_neighbour_distance)
from attacks.fooling.retraining import retraining_experiment
from robustbench_local.results import ResultRow
from robustbench_local.zoo.builders import recipe_trainer
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from rbl_core.figures import plt, save_figure

METHODS = ("map_elites", "gradient_ascent", "retraining")


def save_fooling_grid(result: FoolingResult, path: Path, class_names: tuple[str, ...], title: str) -> Path:
    """PNG grid: the best image of every target class, titled with its class and confidence."""
    n = len(result.classes)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (c, img) in enumerate(zip(result.classes, result.images)):
        ax = axes.ravel()[k]
        arr = img.detach().cpu().numpy()
        if arr.shape[0] == 1:
            ax.imshow(arr[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(np.transpose(arr, (1, 2, 0)).clip(0, 1), interpolation="nearest")
        name = class_names[c] if c < len(class_names) else str(c)
        ax.set_title(f"{name}: {100 * float(result.confidence[k]):.4f}%", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=110)


def build_encoding(t: DictConfig, image_shape: tuple[int, int, int]) -> Encoding:
    """Direct or CPPN encoding from the task config (CPPN colour follows the data's channels)."""
    if t.encoding == "direct":
        return DirectEncoding(image_shape, t.mutation_rate, t.eta_m, t.eta_c)
    if t.encoding == "cppn":
        return CPPNEncoding(image_shape, OmegaConf.to_object(t.cppn_rates))
    raise ConfigError(f"task.encoding must be 'direct' or 'cppn', got {t.encoding!r}")


def map_elites_config(t: DictConfig) -> MapElitesConfig:
    """MapElitesConfig from `task.map_elites` plus the task-level `thresholds` and `log_every`."""
    return MapElitesConfig(**t.map_elites, thresholds=tuple(t.thresholds), log_every=t.log_every)


def gradient_ascent_config(t: DictConfig) -> GradientAscentConfig:
    """GradientAscentConfig from `task.gradient_ascent` (less the harness's `center`) plus the task's `thresholds`."""
    settings = {k: v for k, v in t.gradient_ascent.items() if k != "center"}
    return GradientAscentConfig(**settings, thresholds=tuple(t.thresholds))


def per_class_table(metrics: dict, classes: tuple[int, ...], class_names: tuple[str, ...], title: str) -> str:
    """Plain-text table: per class the confidence, evaluations/steps/seconds to each threshold, NN distance."""
    ts = [k[len("evaluations_to_"):] for k in metrics if k.startswith("evaluations_to_")]
    head = f"{'class':>8} {'confidence':>12} " + " ".join(f"{'evals@' + t:>12} {'s@' + t:>9}" for t in ts)
    lines = [title, head + f" {'nn_dist':>8} {'real_nn':>8}"]
    for k, (c, conf) in enumerate(zip(classes, metrics["confidence"])):
        name = class_names[c] if c < len(class_names) else str(c)
        seconds = [metrics["time_to_" + t][k] for t in ts]
        cells = " ".join(f"{metrics['evaluations_to_' + t][k]:>12} {'-' if s is None else format(s, '.2f'):>9}"
                         for t, s in zip(ts, seconds))
        lines.append(f"{name:>8} {100 * conf:>11.4f}% {cells} {metrics['nn_distance_same_class'][k]:>8.2f} "
                     f"{metrics['real_nn_distance_median'][c]:>8.2f}")
    lines.append(f"evaluations={metrics['evaluations']} steps={metrics['steps']} time_s={metrics['time_s']:.2f}")
    return "\n".join(lines)


def _describe(result: FoolingResult, ctx: TaskContext, test, name: str, class_names) -> dict:
    metrics = result.to_metrics()
    metrics["nn_distance_same_class"] = [round(d, 4) for d in
                                         nearest_same_class_distance(result.images, result.classes, test.x, test.y)]
    metrics["real_nn_distance_median"] = [round(d, 4) for d in
                                          real_nearest_neighbour_distance(test.x, test.y, test.num_classes)]
    png = save_fooling_grid(result, ctx.output_dir / f"{name}.png", class_names,
                            f"{name}: min confidence {100 * metrics['min_confidence']:.4f}%")
    np.savez_compressed(ctx.output_dir / f"{name}.npz", images=result.images.numpy(),
                        confidence=result.confidence.numpy(), classes=np.array(result.classes))
    metrics["grid_png"] = str(png)
    metrics.pop("classes", None)
    metrics["history"] = result.history[-1:] if result.history else []
    print(per_class_table(metrics, result.classes, class_names, f"{name} on {test.name}"))
    return metrics


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Run the fooling-image search configured in `cfg.task`; one row per result, yielded as it is found."""
    t = cfg.task
    method = t.method
    if method not in METHODS:
        raise ConfigError(f"task.method must be one of {METHODS}, got {method!r}")
    test = ctx.load_data("test")
    model = ctx.load_model()
    shape = tuple(test.x.shape[1:])
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    base = ctx.run_config("dataset", "model", "defense", "task", "seed")
    start = time.perf_counter()

    if method == "gradient_ascent":
        ga_config = gradient_ascent_config(t)
        center_kind = t.gradient_ascent.center
        if center_kind == "mean":
            center = ctx.load_data("train").x.mean(dim=0)     # reference: decay toward the mean image
        elif isinstance(center_kind, (int, float)):
            center = torch.full(shape, float(center_kind))
        else:
            raise ConfigError(f"task.gradient_ascent.center must be 'mean' or a grey level, got {center_kind!r}")
        result = gradient_ascent_fooling(model, test.num_classes, shape, ga_config, seed=ctx.seed, center=center)
        name = result.method
        metrics = _describe(result, ctx, test, name, test.class_names)
        yield ctx.row("fooling", name, metrics, base, time.perf_counter() - start)
        return

    encoding = build_encoding(t, shape)
    me_config = map_elites_config(t)
    log = print if t.log_every else None
    if method == "map_elites":
        oracle = ProbabilityOracle(model, batch_size=ctx.batch_size)
        result = map_elites_fooling(oracle, encoding, test.num_classes, me_config, seed=ctx.seed)
        name = result.method
        metrics = _describe(result, ctx, test, name, test.class_names)
        metrics["oracle_queries"] = oracle.queries
        yield ctx.row("fooling", name, metrics, base, time.perf_counter() - start)
        return

    rt_config = OmegaConf.to_object(t.retraining)   # a RetrainingConfig, plus the harness's `epochs`
    build_fn, train_fn = recipe_trainer(cfg.model.name, cfg.dataset.name, shape, rt_config.epochs)
    rounds = retraining_experiment(model, ctx.load_data("train"), test, encoding, build_fn, train_fn,
                                   me_config, rt_config, seed=ctx.seed, log=log)
    for r in rounds:
        name = f"retraining_{r.result.method}"
        metrics = _describe(r.result, ctx, test, f"{name}_round{r.round}", test.class_names)
        metrics.update({k: v for k, v in r.to_metrics().items() if k not in ("confidence",)})
        yield ctx.row("fooling", name, metrics, {**base, "round": r.round}, r.time_s)
