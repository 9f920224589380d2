"""The error types that mean "bad input": the CLI reports them in one line instead of a traceback."""
from __future__ import annotations

from attacks.base import AttackError
from defenses.input_transforms.wrapper import DefenseError
from robustbench_local.data import DataError
from rbl_core.sanity import ModelCheckError
from robustbench_local.results import StoreError
from robustbench_local.tasks.base import ConfigError
from rbl_core.threat import ThreatModelError
from rbl_core.architectures import ArchitectureError
from robustbench_local.zoo.recipes import ZooError
from robustbench_local.sources.errors import ModelSourceError, UnsupportedOnnxOp

USER_ERRORS: tuple[type[Exception], ...] = (AttackError, DataError, ModelCheckError, ConfigError,
                                             ThreatModelError, ArchitectureError, ZooError, StoreError,
                                             ModelSourceError, UnsupportedOnnxOp, DefenseError)
