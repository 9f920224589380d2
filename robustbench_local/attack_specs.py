"""Attacks built from config specs (Hydra ``_target_`` nodes), each with a key naming its full config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from attacks.base import EvasionAttack
from rbl_core.io import sha256_json
from rbl_core.threat import ThreatModel
from robustbench_local.errors import ConfigError


def attack_key(name: str, spec: Mapping[str, Any]) -> str:
    """``name#hash`` of the attack's full config: two differently configured "pgd" runs never share a key."""
    return f"{name}#{sha256_json(dict(spec))[:12]}"


@dataclass(frozen=True)
class AttackSpec:
    """A built attack, its name, its config and the key its per-example results are stored under."""

    name: str
    attack: EvasionAttack
    config: dict
    key: str


def _plain(spec: Any) -> dict:
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)


def build_attack(name: str, spec: Any, threat: ThreatModel, where: str) -> AttackSpec:
    """Instantiate ``spec`` (a ``_target_`` node) as an EvasionAttack that can work in ``threat``."""
    if spec is None or "_target_" not in spec:
        raise ConfigError(f"{where}.{name} needs a _target_ naming an EvasionAttack class")
    try:
        attack = instantiate(spec, name=name)
    except InstantiationException as err:
        raise ConfigError(f"{where}.{name}: cannot build {spec['_target_']}: {err}") from None
    if not isinstance(attack, EvasionAttack):
        raise ConfigError(f"{where}.{name} built a {type(attack).__name__}, not an EvasionAttack")
    attack.check_threat(threat)
    config = _plain(spec)
    return AttackSpec(name, attack, config, attack_key(name, config))


def build_attacks(specs: Any, threat: ThreatModel, where: str = "attack.attacks") -> dict[str, AttackSpec]:
    """Every entry of ``specs`` (name -> spec) built and checked before any of them runs."""
    if not specs:
        raise ConfigError(f"{where} is empty: choose an attack config, e.g. attack=default or attack=pgd")
    return {name: build_attack(name, spec, threat, where) for name, spec in specs.items() if spec is not None}
