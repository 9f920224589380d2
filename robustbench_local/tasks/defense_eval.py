"""A preprocessing defense under defense-unaware and adaptive attacks at several eps (evasion rows).

For each eps it runs ``cfg.attack`` twice through the harness's one evaluation (re-measured on the defended
model): adaptive, as the defense states (end to end, BPDA, or EOT when random), and, with ``task.unaware``,
defense-unaware (crafted on the bare classifier and transferred). Each row records the mode in
``metrics.adaptive``; the leaderboard's headline robust accuracy is the adaptive one. One figure per run shows
an image through the pipeline: RGB, the camera's RAW mosaic, the defense's reconstruction, the adaptive PGD
example at the largest eps, and its defended view. The CLI prints the leaderboard after the run
(``task.print_leaderboard``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig
from torch import nn

from attacks.base import EvasionAttack
from defenses.raw_isp.camera import SyntheticCamera, mosaic, unpack
from defenses.raw_isp.figure import pipeline_figure
from rbl_core.data import DataSplit
from rbl_core.io import sha256_json
from rbl_core.threat import ThreatModel
from robustbench_local.adaptive import adapt_attacks
from robustbench_local.attack_specs import build_attacks
from robustbench_local.evaluation import evaluate
from robustbench_local.results import ResultRow
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext


def _figure(ctx: TaskContext, model: nn.Module, bare: nn.Module, attack: EvasionAttack, data: DataSplit,
            eps: float) -> Path:
    x, y = data.x[:1].to(ctx.device), data.y[:1].to(ctx.device)
    adv = adapt_attacks({"a": attack}, model, bare)[0]["a"](model, x, y, ThreatModel("Linf", eps)).x_adv
    transform = getattr(model, "transform", None)
    view = transform if transform is not None else (lambda z: z)
    with torch.no_grad():
        panels = [("RGB", x[0])]
        if hasattr(transform, "to_raw"):   # the RAW defense: F's estimate, shown with a display gamma
            panels.append(("F(x), RAW mosaic", unpack(transform.to_raw(x)).clamp(0, 1)[0] ** (1 / 2.2)))
        elif x.shape[1] == 3:
            panels.append(("camera RAW mosaic", mosaic(SyntheticCamera().inverse_isp(x))[0] ** (1 / 2.2)))
        panels += [("defense(RGB)", view(x)[0]), (f"adversarial, eps={eps * 255:.0f}/255", adv[0]),
                   ("defense(adversarial)", view(adv)[0])]
        panels = [(title, image.cpu()) for title, image in panels]   # drawn on the host
    name = f"pipeline_{ctx.dataset_label}_{ctx.cfg.model.name}_{ctx.defense_name}.png"
    return pipeline_figure(panels, ctx.output_dir / name, f"{ctx.defense_name} on {ctx.dataset_label}")


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Evasion rows of ``cfg.defense`` per eps in ``task.eps`` and per mode (adaptive, unaware)."""
    t = cfg.task
    if cfg.threat.norm != "Linf":
        raise ConfigError(f"task=defense_eval runs Linf attacks at task.eps; threat.norm={cfg.threat.norm}")
    eps_list = [float(e) for e in t.eps]
    specs = build_attacks(cfg.attack.attacks, ThreatModel("Linf", max(eps_list)))
    data = ctx.load_data("test", n=cfg.dataset.n_test)
    model, bare = ctx.load_model(), ctx.bare_model().module
    defended = getattr(model, "adaptive", None) is not None
    for eps in eps_list:
        threat = ThreatModel("Linf", eps)
        for unaware in ([False, True] if defended and t.unaware else [False]):
            attacks, mode = adapt_attacks({n: s.attack for n, s in specs.items()}, model, bare, unaware=unaware)
            config = ctx.run_config("dataset", "model", "defense", "attack", "seed", "batch_size", eps=eps,
                                    adaptive=mode, task="defense_eval")
            key = sha256_json(config)
            start = time.perf_counter()
            report = evaluate(model, data, attacks, threat, batch_size=cfg.batch_size, seed=cfg.seed,
                              state_path=Path(cfg.results.state_dir) / f"{key}.json", state_key=key,
                              progress=cfg.progress, workers=cfg.workers)
            metrics = report.metrics({n: s.key for n, s in specs.items()})
            metrics["adaptive"] = mode
            yield ctx.row("evasion", "+".join(specs), metrics, config, time.perf_counter() - start, threat=threat,
                          model_info=True)
    if t.figure:
        pgd = specs.get("pgd") or next(iter(specs.values()))
        print(f"wrote {_figure(ctx, model, bare, pgd.attack, data, max(eps_list))}")
