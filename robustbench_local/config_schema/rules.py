"""The walk over a composed config that checks the value ranges its schema fields declare (``rbl_core.config``)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from functools import lru_cache
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from rbl_core.config import Rule
from robustbench_local.errors import ConfigError

# Keys Hydra itself owns; they are never part of a schema.
_FOREIGN_ROOT_KEYS = ("hydra",)


def section(factory: Callable[[], Any]) -> Any:
    """A nested dataclass field defaulting to ``factory()`` (a dataclass, or a lambda with other defaults)."""
    return field(default_factory=factory)


def join(key: str, name: object) -> str:
    """The full key of child ``name`` under ``key`` (``""`` is the root)."""
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else str(name)


def fail(key: str, allowed: str, value: Any, nullable: bool = False) -> ConfigError:
    """The one message shape of a bad value: full key, allowed range, actual value."""
    return ConfigError(f"{key} must be {allowed}{' (or null)' if nullable else ''}, got {value!r}")


@lru_cache(maxsize=None)
def _nullable(cls: type) -> dict[str, bool]:
    hints = typing.get_type_hints(cls)
    return {name: type(None) in typing.get_args(hint) or hint is Any for name, hint in hints.items()}


def _check_value(value: Any, key: str, rule: Rule, nullable: bool) -> None:
    if value is None:
        return
    if isinstance(value, (ListConfig, DictConfig)):
        if rule.nonempty and len(value) == 0:
            raise ConfigError(f"{key} must not be empty")
        items = enumerate(value) if isinstance(value, ListConfig) else value.items()
        for name, item in items:
            _check_value(item, join(key, name), rule, False)
        return
    if not rule.allows(value):
        raise fail(key, rule.describe(), value, nullable)


def check_node(node: DictConfig, key: str = "") -> None:
    """Check ``node`` and everything under it: unknown keys, missing values, field ranges, class hooks."""
    cls = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(cls):
        _check_structured(node, key, cls)
    for name in node:
        if not key and name in _FOREIGN_ROOT_KEYS:
            continue
        if OmegaConf.is_missing(node, name):
            raise ConfigError(f"{join(key, name)} is missing: give it a value")
        child = node[name]
        if isinstance(child, DictConfig):
            check_node(child, join(key, name))
        elif isinstance(child, ListConfig):
            for i, item in enumerate(child):
                if isinstance(item, DictConfig):
                    check_node(item, join(join(key, name), i))


def _check_structured(node: DictConfig, key: str, cls: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    foreign = _FOREIGN_ROOT_KEYS if not key else ()
    # `+key=value` bypasses struct mode at compose time, so an unknown key is caught here instead.
    unknown = [name for name in node if name not in fields and name not in foreign]
    if unknown:
        where = key or "the root config"
        raise ConfigError(f"{join(key, unknown[0])} is not a key of {where}; its keys are: {', '.join(fields)}")
    nullable = _nullable(cls)
    for name, f in fields.items():
        rule = f.metadata.get("rule")
        if rule is not None and not OmegaConf.is_missing(node, name):
            _check_value(node[name], join(key, name), rule, nullable.get(name, False))
    hook = getattr(cls, "check_values", None)
    if hook is not None:
        hook(node, key)
