"""Value ranges of schema fields and the walk over a composed config that checks them."""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from robustbench_local.errors import ConfigError

# Keys Hydra itself owns; they are never part of a schema.
_FOREIGN_ROOT_KEYS = ("hydra",)
_SCHEMA_PACKAGE = __name__.rsplit(".", 1)[0]


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Rule:
    """Allowed values of a field, or of every element of a list or mapping field; null always passes."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False

    def describe(self) -> str:
        """The allowed range in words, e.g. ``>= 1``, ``in (0, 1]``, ``one of a, b``."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "set"

    def allows(self, value: Any) -> bool:
        """Whether one (non-null) value lies in the range."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.ge is None and self.gt is None and self.le is None and self.lt is None
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))


def ranged(default: Any, **rule: Any) -> Any:
    """A dataclass field with ``default`` (copied if mutable) and the value range ``Rule(**rule)``."""
    meta = {"rule": Rule(**rule)} if rule else {}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


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
    if not cls.__module__.startswith(_SCHEMA_PACKAGE):
        # A library dataclass used as the section's schema: its own __post_init__ knows the ranges.
        try:
            OmegaConf.to_object(node)
        except (ValueError, TypeError, OmegaConfBaseException) as err:
            raise ConfigError(f"{key}: {err}") from None
        return
    nullable = _nullable(cls)
    for name, f in fields.items():
        rule = f.metadata.get("rule")
        if rule is not None and not OmegaConf.is_missing(node, name):
            _check_value(node[name], join(key, name), rule, nullable.get(name, False))
    hook = getattr(cls, "check_values", None)
    if hook is not None:
        hook(node, key)
