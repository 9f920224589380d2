"""``rbl task=curve``: robust accuracy as a function of eps, every budget from one call of each attack."""
from __future__ import annotations

import time
from typing import Iterator

import torch
from omegaconf import DictConfig

from rbl_core.data import stream_batches
from rbl_core.remeasure import remeasure
from rbl_core.threat import ThreatModel
from rbl_core.training import predict
from robustbench_local.attack_specs import build_attacks
from robustbench_local.curves import Curve, plot_curves
from robustbench_local.results import ResultRow, encode_mask
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext


def broken_at(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: list[torch.Tensor],
              norm: str, epsilons: list[float]) -> list[torch.Tensor]:
    """Per budget, which examples some re-measured candidate at that budget or a smaller one fools.

    A candidate found for a small budget lies inside every larger ball, so it counts there too: the
    robust share can only fall as eps grows.
    """
    broken = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    out = []
    for eps, x_adv in zip(epsilons, candidates):
        broken = broken | remeasure(model, x, y, x_adv, ThreatModel(norm, eps)).success
        out.append(broken.clone())
    return out


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """One ``curve`` row per attack in ``attack.attacks`` over ``task.epsilons`` in ``threat.norm``."""
    norm, epsilons = str(cfg.threat.norm), [float(e) for e in cfg.task.epsilons]
    if epsilons != sorted(set(epsilons)):
        raise ConfigError(f"task.epsilons must be strictly ascending, got {epsilons}")
    specs = build_attacks(cfg.attack.attacks, ThreatModel(norm, max(epsilons)))
    data = ctx.load_data("test", n=cfg.dataset.n_test)
    model = ctx.load_model()
    # Read batch by batch (a user's data set may not fit in memory); 512 is predict's own chunk size.
    clean = torch.cat([predict(model, x) == data.y[span.start:span.stop] for span, x in stream_batches(data, 512)])
    curves = []
    for name, spec in specs.items():
        start = time.perf_counter()
        broken = [torch.zeros(0, dtype=torch.bool) for _ in epsilons]
        for span, x in stream_batches(data, cfg.batch_size):
            x, y = x.to(ctx.device), data.y[span.start:span.stop].to(ctx.device)
            torch.manual_seed(cfg.seed)
            candidates = [r.x_adv for r in spec.attack.at_epsilons(model, x, y, norm, epsilons)]
            found = [f.cpu() for f in broken_at(model, x, y, candidates, norm, epsilons)]
            broken = [torch.cat([b, f]) for b, f in zip(broken, found)]
        masks = [encode_mask((clean & ~b).tolist()) for b in broken]
        accs = [m.count("1") / len(m) for m in masks]
        curves.append(Curve(f"{cfg.model.name} / {name}", epsilons, accs, "attack run"))
        figure = plot_curves(curves[-1:], ctx.output_dir / f"curve_{name}.png", f"{ctx.dataset_label}, {norm}")
        metrics = {"n": len(data.y), "attack_name": name, "attack_key": spec.key,
                   "clean_acc": int(clean.sum()) / len(clean), "clean_mask": encode_mask(clean.tolist()),
                   "epsilons": epsilons, "masks": masks, "robust_acc": accs, "figures": [str(figure.resolve())]}
        config = ctx.run_config("dataset", "model", "defense", "seed", "batch_size", attack=spec.config,
                                norm=norm, epsilons=epsilons)
        yield ctx.row("curve", name, metrics, config, time.perf_counter() - start, threat_model=norm,
                      model_info=True)
