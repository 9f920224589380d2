"""The ``rbl`` command: Hydra composes the config from the command line, the API runs it and records its rows."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from attacks.base import AttackError
from defenses.input_transforms.wrapper import DefenseError
from rbl_core.architectures import ArchitectureError
from rbl_core.device import DeviceError
from rbl_core.sanity import ModelCheckError
from rbl_core.threat import ThreatModelError
from robustbench_local.api import CONF_DIR, run_task
from robustbench_local.data import DataError
from robustbench_local.errors import ConfigError
from robustbench_local.group_choices import unknown_choice
from robustbench_local.results import StoreError
from robustbench_local.sources.errors import ModelSourceError, UnsupportedOnnxOp
from robustbench_local.sweep import in_sweep
from robustbench_local.zoo.recipes import ZooError

# Bad input: the CLI reports these in one line instead of a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (AttackError, DataError, ModelCheckError, ConfigError,
                                             ThreatModelError, ArchitectureError, ZooError, StoreError,
                                             ModelSourceError, UnsupportedOnnxOp, DefenseError, DeviceError)


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
