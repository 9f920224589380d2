"""The ``rbl`` command: compose the Hydra config, run the selected task, record its rows."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which fails without git

import hydra  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import get_method  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from robustbench_local.config_schema import register_configs, validate  # noqa: E402
from robustbench_local.errors import USER_ERRORS  # noqa: E402
from robustbench_local.group_choices import unknown_choice  # noqa: E402
from robustbench_local.results import ResultRow, ResultsStore  # noqa: E402
from robustbench_local.results.spool import RowSink, import_spool  # noqa: E402
from robustbench_local.sweep import in_sweep, run_job, tracked  # noqa: E402
from robustbench_local.tasks.base import ConfigError, TaskContext  # noqa: E402
from robustbench_local.tasks.leaderboard import render  # noqa: E402

register_configs()  # conf/ extends these schemas, so they must be stored before any compose


def _conf_dir() -> Path:
    """The Hydra config tree: the copy a wheel ships in the package, else ``conf/`` of the checkout."""
    here = Path(__file__).resolve().parent
    return here / "conf" if (here / "conf" / "config.yaml").exists() else here.parent / "conf"


CONF_DIR = _conf_dir()


def compose_config(*overrides: str) -> DictConfig:
    """``conf/config.yaml`` composed with command-line style overrides, as ``rbl`` would (no run dir)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _summary(row: ResultRow) -> str:
    numbers = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return f"[{row.kind}] {row.dataset}/{row.model} ({row.defense}) {row.attack} {row.threat_model} eps={row.eps}: {numbers}"


def open_store(cfg: DictConfig) -> ResultsStore:
    """The results store, opened and checked writable before any work, with rows a failed run spooled imported."""
    store = ResultsStore(cfg.results.url)
    try:
        store.check_writable()
        imported = import_spool(store, cfg.results.spool)
    except BaseException:
        store.close()
        raise
    if imported:
        print(f"rbl: imported {imported} spooled row(s) from {cfg.results.spool} into {cfg.results.url}")
    return store


def run_task(cfg: DictConfig, ctx: TaskContext | None = None) -> list[ResultRow]:
    """Run ``cfg.task`` (with a fresh context unless ``ctx`` is given), recording each row as the task yields it.

    Inside a sweep the job's outcome is recorded too, and a job already recorded ``ok`` is skipped.
    """
    return run_job(cfg, lambda: _run_rows(cfg, ctx)) if tracked(cfg) else _run_rows(cfg, ctx)


def _run_rows(cfg: DictConfig, ctx: TaskContext | None) -> list[ResultRow]:
    validate(cfg)
    torch.set_num_threads(int(cfg.torch_threads))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if str(cfg.device) != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} requested but no CUDA device is available; use device=cpu")
    target = cfg.task.get("_target_")
    if not target:
        raise ConfigError("task._target_ is missing: choose a task, e.g. task=evaluate")
    output_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    store = open_store(cfg)
    try:
        sink = RowSink(store, cfg.results.spool)
        ctx = ctx or TaskContext.from_config(cfg, output_dir)
        for row in get_method(target)(cfg, ctx) or []:
            sink.record(row)
            print(_summary(row))
    finally:
        store.close()
    if cfg.task.get("print_leaderboard"):
        print(f"\nLeaderboard ({cfg.dataset.name}, {cfg.threat.norm}) from {cfg.results.url}:")
        render(cfg.results.url, cfg.dataset.name, str(cfg.threat.norm))
    return sink.recorded + sink.spooled


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_task(cfg)
    except USER_ERRORS as err:
        # Bad input is the user's to fix: one clear line, no traceback from deep inside a library.
        print(f"rbl: error: {err}", file=sys.stderr)
        if in_sweep():
            raise   # SystemExit would end the whole sweep; Hydra records the failure and runs the other jobs
        raise SystemExit(2) from None


def main() -> None:
    """Console entry point of ``rbl``."""
    if not (CONF_DIR / "config.yaml").exists():
        sys.exit(f"rbl: error: config tree not found at {CONF_DIR}; install the suite from its source checkout "
                 "(`pip install .` or `pip install -e .`) or from a wheel built there")
    bad = unknown_choice(sys.argv[1:], CONF_DIR)
    if bad:
        print(f"rbl: error: {bad}", file=sys.stderr)
        raise SystemExit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
