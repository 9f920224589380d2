"""DVERGE's evaluation of an ensemble: black-box transfer attacks from hold-out surrogates, and the
sub-models' pairwise transferability matrix (heatmap PNG in the run directory).

White-box PGD / AutoAttack rows (kind="evasion") come from the main ``evaluate`` task run on the
same zoo model; this task records kind="ensemble" rows:
* one row per eps: accuracy under each transfer attack crafted on each surrogate ensemble, and under
  all of them (robust only if the image survives every attack, as in the paper);
* one row for the transferability matrix at ``transferability.eps``.
"""
from __future__ import annotations

import time
from typing import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig

from attacks.transfer.attacks import craft_transfer_examples, default_transfer_attacks, transfer_accuracy
from defenses.dverge.ensemble import Ensemble
from defenses.dverge.transferability import mean_off_diagonal, plot_transferability, transferability_matrix
from rbl_core.io import atomic_write, sha256_json
from rbl_core.threat import ThreatModel
from robustbench_local.results import ResultRow
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from robustbench_local.zoo import get_recipe, load_model
from robustbench_local.zoo.cache import default_cache_dir


def _eps_list(cfg: DictConfig) -> list[float]:
    t = cfg.task
    if t.eps is not None:
        return [float(e) for e in t.eps]
    if cfg.dataset.name not in t.eps_by_dataset:
        raise ConfigError(f"task.eps is null and task.eps_by_dataset has no entry for {cfg.dataset.name!r}; "
                          f"set task.eps=[...]")
    return [float(e) for e in t.eps_by_dataset[cfg.dataset.name]]


def _cached_transfer_examples(cfg: DictConfig, ctx: TaskContext, surrogates: dict, data, eps: float) -> dict:
    """Craft (or load) the transfer set; it depends only on surrogates, data, eps and attack settings,
    so every evaluated model of a data set reuses it (tensors only, loaded with weights_only=True)."""
    t = cfg.task
    ident = {"dataset": cfg.dataset.name, "n": len(data), "eps": eps, "steps": int(t.steps),
             "restarts": int(t.restarts), "seed": int(cfg.seed), "size": cfg.dataset.size,
             "surrogates": {s: get_recipe(s, cfg.dataset.name).hash() for s in surrogates}}
    key = sha256_json(ident)[:20]
    path = Path(ctx.cache_dir or default_cache_dir()) / "dverge_transfer" / f"{cfg.dataset.name}-{key}.pt"
    if path.exists():
        return torch.load(path, map_location=ctx.device, weights_only=True)
    torch.manual_seed(cfg.seed)
    attacks = default_transfer_attacks(steps=int(t.steps), restarts=int(t.restarts))
    x, y = data.x.to(ctx.device), data.y.to(ctx.device)
    adv = craft_transfer_examples(surrogates, x, y, eps, attacks, batch_size=ctx.batch_size)
    # Stored on the CPU, so a run on another device reads the same file.
    atomic_write(path, lambda tmp: torch.save({k: v.cpu() for k, v in adv.items()}, tmp))
    return adv


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Transfer-attack accuracy per eps and the transferability matrix of ``cfg.model``."""
    t = cfg.task
    model = ctx.load_model()
    if not isinstance(model, Ensemble):
        raise ConfigError(f"task=dverge_eval needs an ensemble model (e.g. model=dverge_ens3_cnn); "
                          f"{cfg.model.name!r} is a {type(model).__name__}")
    n = t.n_eval if t.n_eval is not None else cfg.dataset.n_test
    data = ctx.load_data("test", n=n)
    surrogate_names = list(t.surrogates)
    if cfg.model.name in surrogate_names:
        raise ConfigError(f"model {cfg.model.name!r} is also listed as a surrogate; transfer needs hold-out models")
    surrogates = {s: load_model(s, cfg.dataset.name, threat_model=None, cache_dir=ctx.cache_dir,
                                data_root=ctx.data_root).to(ctx.device) for s in surrogate_names}
    x, y = data.x.to(ctx.device), data.y.to(ctx.device)
    for eps in _eps_list(cfg):
        start = time.perf_counter()
        adv = _cached_transfer_examples(cfg, ctx, surrogates, data, eps)
        metrics = transfer_accuracy(model, x, y, adv, ThreatModel("Linf", eps))
        metrics = {"part": "transfer", "clean_acc": metrics.pop("clean"), "transfer_acc": metrics.pop("all"),
                   "per_attack": metrics, "n": len(data)}
        yield ctx.row("ensemble", "transfer:" + "+".join(surrogate_names), metrics,
                      ctx.run_config("dataset", "model", "task", "seed", eps=eps, part="transfer"),
                      time.perf_counter() - start, threat_model="Linf", eps=eps)
    tr = t.transferability
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    matrix, used = transferability_matrix(list(model.members), x, y, float(tr.eps), steps=int(tr.steps),
                                          restarts=int(tr.restarts), n=tr.n, batch_size=ctx.batch_size)
    png = plot_transferability(matrix, ctx.output_dir / f"transferability_{cfg.dataset.name}_{cfg.model.name}.png",
                               f"{cfg.model.name} on {cfg.dataset.name}, PGD eps={float(tr.eps)}")
    metrics = {"part": "transferability", "matrix": matrix.round(4).tolist(),
               "mean_off_diagonal": mean_off_diagonal(matrix), "n": used, "heatmap": str(png)}
    yield ctx.row("ensemble", "transferability_pgd", metrics,
                  ctx.run_config("dataset", "model", "task", "seed", part="transferability"),
                  time.perf_counter() - start, threat_model="Linf", eps=float(tr.eps))
