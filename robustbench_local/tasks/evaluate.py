"""The main job: clean accuracy and robust accuracy under each configured attack and in the worst case."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from attacks.adapters.autoattack_adapter import AutoAttackAdapter
from robustbench_local.adaptive import adapt_attacks
from robustbench_local.attack_specs import build_attacks
from rbl_core.io import sha256_json
from rbl_core.threat import ThreatModel
from robustbench_local.evaluation import evaluate
from robustbench_local.results import ResultRow
from robustbench_local.tasks.base import TaskContext


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Evaluate ``cfg.model`` on ``cfg.dataset`` against ``cfg.attack`` within ``cfg.threat``."""
    threat = ThreatModel(cfg.threat.norm, cfg.threat.eps)
    specs = build_attacks(cfg.attack.attacks, threat)
    data = ctx.load_data("test", n=cfg.dataset.n_test)
    model = ctx.load_model()
    config = ctx.run_config("dataset", "model", "defense", "attack", "threat", "seed", "batch_size")
    key = sha256_json(config)
    state_path = Path(cfg.results.state_dir) / f"{key}.json"
    start = time.perf_counter()
    # A preprocessing defense is attacked adaptively (end to end, BPDA, or EOT when it is random).
    attacks, mode = adapt_attacks({n: s.attack for n, s in specs.items()}, model, ctx.bare_model().module)
    report = evaluate(model, data, attacks, threat, batch_size=cfg.batch_size,
                      seed=cfg.seed, state_path=state_path, state_key=key, progress=cfg.progress,
                      workers=cfg.workers)
    metrics = report.metrics({n: s.key for n, s in specs.items()})
    standard = [n for n, s in specs.items() if isinstance(s.attack, AutoAttackAdapter) and s.attack.version == "standard"]
    metrics["autoattack_acc"] = report.attacks[standard[0]].robust_acc if standard else None
    metrics["autoattack_key"] = specs[standard[0]].key if standard else None
    metrics["adaptive"] = mode
    yield ctx.row("evasion", "+".join(specs), metrics, config, time.perf_counter() - start, threat=threat,
                  model_info=True)
