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


def _num(x: float) -> str:
    return f"{x:g}"


def _describe(rule: Rule) -> str:
    """The allowed range in words, e.g. ``>= 1``, ``in (0, 1]``, ``one of a, b``."""
    if rule.choices is not None:
        return "one of " + ", ".join(str(c) for c in rule.choices)
    low = f"[{_num(rule.ge)}" if rule.ge is not None else f"({_num(rule.gt)}" if rule.gt is not None else None
    high = f"{_num(rule.le)}]" if rule.le is not None else f"{_num(rule.lt)})" if rule.lt is not None else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    if high:
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]
    return "set"


def _allows(rule: Rule, value: Any) -> bool:
    """Whether one (non-null) value lies in the range."""
    if rule.choices is not None:
        return value in rule.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return rule.ge is None and rule.gt is None and rule.le is None and rule.lt is None
    return ((rule.ge is None or value >= rule.ge) and (rule.gt is None or value > rule.gt)
            and (rule.le is None or value <= rule.le) and (rule.lt is None or value < rule.lt))


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
    if not _allows(rule, value):
        raise fail(key, _describe(rule), value, nullable)


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
