"""Results database: one typed row per evaluated configuration, written idempotently through SQLAlchemy."""
from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, Text, create_engine, event, select)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, SQLAlchemyError

from rbl_core.io import canonical_json, sha256_json
import robustbench_local.results.schemas  # noqa: F401 - registers the built-in kinds
from robustbench_local.results.kinds import Metrics, parse_metrics

DEFAULT_URL = "sqlite:///results/rbl.db"
_VERSIONED = ("robustbench-local", "torch", "numpy", "foolbox", "pyautoattack", "z3-solver", "hydra-core", "SQLAlchemy")

_metadata = MetaData()
results_table = Table(
    "results", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("config_hash", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False, index=True),
    Column("dataset", String(64), nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("defense", String(128), nullable=False),
    Column("attack", String(256), nullable=False),
    Column("threat_model", String(16), nullable=False),
    Column("eps", Float, nullable=True),
    Column("seed", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("metrics", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("time_s", Float, nullable=False),
    Column("versions", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)


def config_hash(config: dict) -> str:
    """SHA-256 of the canonical JSON of ``config``."""
    return sha256_json(config)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type name when it has none), for one-line reports."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        tail = f"{user}:***@{tail.split('@', 1)[1]}"
    return head + sep + tail


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class ResultRow:
    """What was evaluated, what it measured, and how long it took."""

    kind: str
    dataset: str
    model: str
    attack: str
    metrics: dict
    config: dict
    defense: str = "none"
    threat_model: str = "none"
    eps: float | None = None
    seed: int = 0
    time_s: float = 0.0
    status: str = "ok"
    versions: dict = field(default_factory=library_versions)

    def __post_init__(self) -> None:
        # A row is checked against its kind's schema when it is made, so a task cannot emit a row the
        # leaderboard would have to guess about.
        self.typed()

    def typed(self) -> Metrics:
        """The metrics parsed and validated by the schema of ``kind``."""
        return parse_metrics(self.kind, self.metrics)

    @classmethod
    def from_record(cls, record: dict) -> "ResultRow":
        """A row rebuilt from ``to_record()`` output or a store row dict (validated again)."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in names})

    def to_record(self) -> dict:
        """The row as plain JSON-safe data (the spool format)."""
        return _json_safe(asdict(self))

    @property
    def config_hash(self) -> str:
        """Idempotency key: the hash of the config plus the identifying fields."""
        ident = {"kind": self.kind, "dataset": self.dataset, "model": self.model, "attack": self.attack,
                 "defense": self.defense, "threat_model": self.threat_model, "eps": self.eps, "seed": self.seed}
        return config_hash({"config": self.config, "ident": ident})


class StoreError(RuntimeError):
    """The results store cannot be opened or written (bad URL, unreachable server, read-only file)."""


class ResultsStore:
    """Rows in any SQLAlchemy database (SQLite files made safe for concurrent writers); ``with`` closes it."""

    def __init__(self, url: str = DEFAULT_URL, retries: int = 20) -> None:
        self.url = url
        self.retries = retries
        try:
            self.engine = self._make_engine(url)
            self._retry(self._create_schema)
        except (ArgumentError, NoSuchModuleError, SQLAlchemyError, ImportError, OSError) as err:
            raise StoreError(f"results.url={_redact(url)}: cannot open the results store: "
                             f"{first_line(err)}") from None

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Concurrent CREATE TABLE IF NOT EXISTS races in PostgreSQL; serialise it across jobs.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
            _metadata.create_all(conn, checkfirst=True)

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if not url.startswith("sqlite"):
            return create_engine(url, pool_pre_ping=True)
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - SQLAlchemy hook
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001 - SQLAlchemy hook
            # IMMEDIATE takes the write lock up front: deferred read-then-write upgrades fail under load.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _retry(self, fn):  # noqa: ANN001, ANN202
        for attempt in range(self.retries):
            try:
                return fn()
            except OperationalError as err:
                text = str(err).lower()
                if ("locked" not in text and "busy" not in text and "already exists" not in text) \
                        or attempt == self.retries - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
        raise RuntimeError("unreachable")

    def check_writable(self) -> None:
        """Raise StoreError unless a write transaction can be opened now (called before any work starts)."""
        def probe() -> None:
            with self.engine.begin() as conn:
                conn.execute(select(results_table.c.id).limit(1)).first()

        try:
            self._retry(probe)
        except SQLAlchemyError as err:
            raise StoreError(f"results.url={_redact(self.url)}: the results store is not writable: "
                             f"{first_line(err)}") from None

    def record(self, row: ResultRow) -> str:
        """Validate ``row``, then insert it or replace the row with the same config hash; returns the hash."""
        row.typed()
        key = row.config_hash
        values = {k: v for k, v in asdict(row).items() if k not in ("metrics", "config", "versions")}
        values.update(config_hash=key, metrics=canonical_json(_json_safe(row.metrics)),
                      config=canonical_json(_json_safe(row.config)), versions=canonical_json(row.versions),
                      created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))

        def write() -> None:
            with self.engine.begin() as conn:
                existing = conn.execute(select(results_table.c.id).where(results_table.c.config_hash == key)).first()
                if existing is None:
                    try:
                        conn.execute(results_table.insert().values(**values))
                        return
                    except IntegrityError:
                        pass  # another writer inserted the same key first (PostgreSQL); update instead
                conn.execute(results_table.update().where(results_table.c.config_hash == key).values(**values))

        self._retry(write)
        return key

    def rows(self, **filters: Any) -> list[dict]:
        """All rows matching column=value filters (None values are ignored), oldest first."""
        query = select(results_table).order_by(results_table.c.id)
        for column, value in filters.items():
            if value is None:
                continue
            if column not in results_table.c:
                raise KeyError(f"unknown results column {column!r}: choose from {list(results_table.c.keys())}")
            query = query.where(results_table.c[column] == value)
        with self.engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(query)]
        for row in out:
            for key in ("metrics", "config", "versions"):
                row[key] = json.loads(row[key])
        return out

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
