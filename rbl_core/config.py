"""Value ranges as dataclass field metadata, so a library's config dataclass can serve as the harness's schema.

The declaration and the test of one value live here: a library's dataclass checks itself with
:func:`check_ranges` in ``__post_init__``, and the harness (``robustbench_local/config_schema``) walks composed
configs with the same :meth:`Rule.allows` and :meth:`Rule.describe`, so a range is written once.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

PROBABILITY = {"ge": 0, "le": 1}
CONFIDENCE = {"gt": 0, "le": 1}


@dataclass(frozen=True)
class Rule:
    """Allowed values of a field, or of every element of a list or mapping field; null always passes."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False

    def allows(self, value: Any) -> bool:
        """Whether one (non-null, non-container) value lies in the range."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.ge is None and self.gt is None and self.le is None and self.lt is None
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        """The allowed range in words, e.g. ``>= 1``, ``in (0, 1]``, ``one of a, b``."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "set"


def ranged(default: Any, **rule: Any) -> Any:
    """A dataclass field with ``default`` (copied if mutable) and the value range ``Rule(**rule)``."""
    meta = {"rule": Rule(**rule)} if rule else {}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_ranges(obj: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the first field of dataclass ``obj`` whose value leaves its declared range."""
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("rule")
        value = getattr(obj, f.name)
        if rule is None or value is None:
            continue
        items = list(value.values() if isinstance(value, dict) else value) if isinstance(value, (list, tuple, dict)) \
            else [value]
        if rule.nonempty and not items:
            raise error(f"{type(obj).__name__}.{f.name} must not be empty")
        bad = next((v for v in items if v is not None and not rule.allows(v)), None)
        if bad is not None:
            raise error(f"{type(obj).__name__}.{f.name} must be {rule.describe()}, got {bad!r}")
