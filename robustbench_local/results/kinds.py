"""One typed metrics schema per result kind, validated when a row is recorded and read back by the leaderboard.

A kind is a frozen dataclass. ``parse_metrics(kind, metrics)`` checks that every required field is there with
the right type and that the numbers agree with each other (an accuracy is the share of its mask, counts add up
to ``n``), so a row that would need guessing never reaches the store. Fields a kind does not declare are kept
as they are (method-specific details) and are never read by the leaderboard.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping


class RowSchemaError(ValueError):
    """A result row whose metrics do not fit its kind's schema."""


def encode_mask(flags: typing.Iterable[bool]) -> str:
    """Per-example booleans as a compact "0101" string (stored so runs can be combined per example)."""
    return "".join("1" if f else "0" for f in flags)


def decode_mask(mask: str) -> list[bool]:
    """The booleans of an ``encode_mask`` string."""
    return [c == "1" for c in mask]


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        k, v = typing.get_args(hint)
        return isinstance(value, Mapping) and all(_fits(a, k) and _fits(b, v) for a, b in value.items())
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_fits(a, item) for a in value)
    return isinstance(value, hint)


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Base of every kind: the declared fields of a subclass plus the extra fields, kept unread."""

    kind: ClassVar[str] = ""
    fractions: ClassVar[tuple[str, ...]] = ()  # fields that must lie in [0, 1] when set

    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Any]) -> "Metrics":
        """Parse and validate ``metrics``; raises RowSchemaError naming the kind and the field."""
        if not isinstance(metrics, Mapping):
            raise RowSchemaError(f"{cls.kind} row: metrics must be a mapping, got {type(metrics).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in metrics:
                if required:
                    raise RowSchemaError(f"{cls.kind} row: metrics.{f.name} is missing")
                continue
            if not _fits(metrics[f.name], hints[f.name]):
                raise RowSchemaError(f"{cls.kind} row: metrics.{f.name}={metrics[f.name]!r} is not {hints[f.name]}")
            values[f.name] = metrics[f.name]
        parsed = cls(**values, extra={k: v for k, v in metrics.items() if k not in known})
        parsed.check()
        return parsed

    def check(self) -> None:
        """Cross-field consistency; subclasses extend it."""
        if getattr(self, "n", 0) < 0:
            raise RowSchemaError(f"{self.kind} row: metrics.n must be >= 0, got {self.n}")
        for name in self.fractions:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise RowSchemaError(f"{self.kind} row: metrics.{name}={value} is not in [0, 1]")

    def _mask(self, name: str, mask: str) -> None:
        if len(mask) != self.n or set(mask) - {"0", "1"}:
            raise RowSchemaError(f"{self.kind} row: metrics.{name} must be {self.n} characters of 0/1, "
                                 f"got {len(mask)} characters")

    def _share(self, name: str, value: float, mask: str) -> None:
        if self.n and abs(value - mask.count("1") / self.n) > 1e-9:
            raise RowSchemaError(f"{self.kind} row: metrics.{name}={value} disagrees with its mask "
                                 f"({mask.count('1')}/{self.n})")

    def to_dict(self) -> dict:
        """Declared fields plus the extra ones, as stored."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}


KINDS: dict[str, type[Metrics]] = {}


def register_kind(cls: type[Metrics]) -> type[Metrics]:
    """Class decorator: make ``cls`` the schema of rows with ``kind == cls.kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a non-empty kind")
    KINDS[cls.kind] = cls
    return cls


def parse_metrics(kind: str, metrics: Mapping[str, Any]) -> Metrics:
    """The typed metrics of a row of ``kind``; an unknown kind is an error, never a guess."""
    schema = KINDS.get(kind)
    if schema is None:
        raise RowSchemaError(f"unknown result kind {kind!r}: choose one of {sorted(KINDS)}")
    return schema.from_dict(metrics)
