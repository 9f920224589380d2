"""The main job: clean accuracy and robust accuracy under each configured attack and in the worst case."""
from __future__ import annotations

import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from attacks.adapters.autoattack_adapter import AutoAttackAdapter
from attacks.base import EvasionAttack
from robustbench_local.evaluation import evaluate
from robustbench_local.results import ResultRow, config_hash
from robustbench_local.tasks.base import ConfigError, TaskContext
from robustbench_local.core.threat import ThreatModel


def build_attacks(cfg: DictConfig, threat: ThreatModel) -> dict[str, EvasionAttack]:
    """Instantiate every entry of ``cfg.attack.attacks`` as an EvasionAttack keyed by its name."""
    specs = cfg.attack.get("attacks")
    if not specs:
        raise ConfigError("attack.attacks is empty: choose an attack config, e.g. attack=default or attack=pgd")
    attacks = {}
    for name, spec in specs.items():
        attack = instantiate(spec, name=name)
        if not isinstance(attack, EvasionAttack):
            raise ConfigError(f"attack.attacks.{name} built a {type(attack).__name__}, not an EvasionAttack")
        attack.check_threat(threat)
        attacks[name] = attack
    return attacks


def run(cfg: DictConfig, ctx: TaskContext) -> list[ResultRow]:
    """Evaluate ``cfg.model`` on ``cfg.dataset`` against ``cfg.attack`` within ``cfg.threat``."""
    threat = ThreatModel(cfg.threat.norm, cfg.threat.eps)
    attacks = build_attacks(cfg, threat)
    data = ctx.load_data("test", n=cfg.dataset.get("n_test"))
    model = ctx.load_model()
    config = {"dataset": OmegaConf.to_container(cfg.dataset), "model": OmegaConf.to_container(cfg.model),
              "defense": OmegaConf.to_container(cfg.defense), "attack": OmegaConf.to_container(cfg.attack),
              "threat": OmegaConf.to_container(cfg.threat), "seed": cfg.seed, "batch_size": cfg.batch_size}
    key = config_hash(config)
    state_path = Path(cfg.results.state_dir) / f"{key}.json"
    start = time.perf_counter()
    report = evaluate(model, data, attacks, threat, batch_size=cfg.batch_size, seed=cfg.seed,
                      state_path=state_path, state_key=key, progress=cfg.progress, workers=int(cfg.get("workers", 1)))
    metrics = report.metrics()
    aa = [n for n, a in attacks.items() if isinstance(a, AutoAttackAdapter) and a.version == "standard"]
    metrics["autoattack_acc"] = report.attacks[aa[0]].robust_acc if aa else None
    row = ResultRow(kind="evasion", dataset=cfg.dataset.name, model=cfg.model.name, defense=ctx.defense_name,
                    attack="+".join(attacks), threat_model=threat.norm.value, eps=threat.eps, seed=cfg.seed,
                    metrics=metrics, config=config, time_s=time.perf_counter() - start)
    return [row]
