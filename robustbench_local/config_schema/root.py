"""Schema of the root config and its dataset / model / attack / defense groups (``conf/config.yaml``).

The root schema types every group node, so a group file (``conf/dataset/*.yaml`` ...) needs no defaults
line of its own: it is merged into a typed node and checked there. ``task`` stays ``Any`` at the root;
each ``conf/task/<name>.yaml`` extends its own schema (see ``tasks.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from omegaconf import MISSING

from robustbench_local.config_schema.rules import ranged, section
from rbl_core.threat import Norm

NORMS = tuple(n.value for n in Norm)


@dataclass
class ThreatConfig:
    """``threat``: the norm ball attacks must stay in."""

    norm: str = ranged("Linf", choices=NORMS)
    eps: float | None = ranged(0.1, ge=0)   # null: unbounded (minimisation attacks)


@dataclass
class ResultsConfig:
    """``results``: where rows and resumable per-batch state go."""

    url: str = "sqlite:///results/rbl.db"
    state_dir: str = "results/state"
    spool: str = "results/spool.jsonl"


@dataclass
class DatasetConfig:
    """``dataset`` group: which data set, where, and how much of its test split."""

    name: str = MISSING
    root: str | None = None
    n_test: int | None = ranged(None, ge=1)
    size: int | None = ranged(None, ge=1)


@dataclass
class ModelConfig:
    """``model`` group: a zoo recipe name."""

    name: str = MISSING


@dataclass
class AttackConfig:
    """``attack`` group: name -> Hydra ``_target_`` spec of an EvasionAttack (null drops an inherited entry)."""

    attacks: Dict[str, Any] = ranged({})


@dataclass
class DefenseConfig:
    """``defense`` group: a name for the results and an optional ``_target_`` wrapper(model) -> nn.Module."""

    name: str = "none"
    wrapper: Any = None


@dataclass
class RootConfig:
    """The whole ``rbl`` config; ``task`` is typed by the selected task's own schema."""

    dataset: DatasetConfig = section(DatasetConfig)
    model: ModelConfig = section(ModelConfig)
    attack: AttackConfig = section(AttackConfig)
    defense: DefenseConfig = section(DefenseConfig)
    task: Any = None
    seed: int = ranged(0, ge=0)
    device: str = "cpu"
    torch_threads: int = ranged(1, ge=1)
    batch_size: int = ranged(200, ge=1)
    workers: int = ranged(2, ge=1)
    progress: bool = True
    cache_dir: str | None = None
    threat: ThreatConfig = section(ThreatConfig)
    results: ResultsConfig = section(ResultsConfig)
