"""Structured-config schemas of ``rbl``: types checked while Hydra composes, ranges checked by :func:`validate`.

``conf/config.yaml`` extends ``/schema/root`` (:class:`RootConfig`, which also types the dataset, model,
attack and defense groups) and each ``conf/task/<name>.yaml`` extends ``/schema/task/<name>`` through its
defaults list (Hydra's "extending configs" pattern), so ``dataset.n_test=abc`` or ``task.no_such_key=1``
fail at compose time with Hydra's message naming the key. Ranges live in the fields' metadata
(:func:`rbl_core.config.ranged`, also on the library dataclasses used as sections); :func:`validate` checks
them before any work.
"""
from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from robustbench_local.config_schema.root import (AttackConfig, DatasetConfig, DefenseConfig, ModelConfig,
                                                  ResultsConfig, RootConfig, ThreatConfig)
from robustbench_local.config_schema.rules import Rule, check_node
from robustbench_local.config_schema.tasks import TASKS

__all__ = ["AttackConfig", "DatasetConfig", "DefenseConfig", "ModelConfig", "ResultsConfig", "RootConfig", "Rule",
           "TASKS", "ThreatConfig", "register_configs", "validate"]

SCHEMA_GROUP = "schema"


def _writable(node: DictConfig) -> DictConfig:
    """``node`` with every mapping in it open to overrides (OmegaConf makes a frozen dataclass's node read-only)."""
    OmegaConf.set_readonly(node, False)
    for key in node:
        if not OmegaConf.is_missing(node, key) and isinstance(node[key], DictConfig):
            _writable(node[key])
    return node


def register_configs() -> None:
    """Store the root schema as ``schema/root`` and each task's as ``schema/task/<name>`` (safe to call again)."""
    cs = ConfigStore.instance()
    cs.store(group=SCHEMA_GROUP, name="root", node=RootConfig)
    for name, schema in TASKS.items():
        # Frozen library dataclasses (CudaKernels, VictimRecipe, GANConfig) are sections: open them to overrides.
        cs.store(group=f"{SCHEMA_GROUP}/task", name=name, node=_writable(OmegaConf.structured(schema)))


def validate(cfg: DictConfig) -> None:
    """Check the value ranges of a composed config (and keys added with ``+``); ConfigError names the key."""
    check_node(cfg)
