"""Value ranges as dataclass field metadata, so a library's config dataclass can serve as the harness's schema.

Only the declaration lives here; the harness (``robustbench_local/config_schema``) reads the metadata and
checks composed configs against it.
"""
from __future__ import annotations

import copy
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


def ranged(default: Any, **rule: Any) -> Any:
    """A dataclass field with ``default`` (copied if mutable) and the value range ``Rule(**rule)``."""
    meta = {"rule": Rule(**rule)} if rule else {}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)
