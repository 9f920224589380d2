"""Rows that could not reach the store wait in a local JSON-lines spool until the next run imports them."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from rbl_core.io import atomic_write_text
from robustbench_local.results.store import ResultRow, ResultsStore, StoreError, first_line

DEFAULT_SPOOL = "results/spool.jsonl"


def spool_rows(path: str | Path, rows: list[ResultRow]) -> Path:
    """Append ``rows`` to the spool at ``path``, flushed to disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.to_record(), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def read_spool(path: str | Path) -> list[ResultRow]:
    """The rows of a spool file, each validated against its kind (a bad line names its number)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(ResultRow.from_record(json.loads(line)))
        except (ValueError, TypeError) as err:
            raise StoreError(f"{path}:{number}: not a result row: {err}") from None
    return rows


def import_spool(store: ResultsStore, path: str | Path) -> int:
    """Record every spooled row in ``store`` (idempotent by config hash), then empty the spool; returns the count.

    Rows that still cannot be written stay in the spool, so a second failure loses nothing either.
    """
    path = Path(path)
    if not path.exists():
        return 0
    rows = read_spool(path)
    left: list[ResultRow] = []
    for row in rows:
        try:
            store.record(row)
        except SQLAlchemyError:
            left.append(row)
    atomic_write_text(path, "".join(json.dumps(r.to_record(), sort_keys=True) + "\n" for r in left))
    if not left:
        path.unlink()
    return len(rows) - len(left)


class RowSink:
    """Where a task's rows go as it produces them: the store, or the spool when the store fails mid-run."""

    def __init__(self, store: ResultsStore, spool: str | Path = DEFAULT_SPOOL) -> None:
        self.store, self.spool = store, Path(spool)
        self.recorded: list[ResultRow] = []
        self.spooled: list[ResultRow] = []

    def record(self, row: ResultRow) -> str:
        """Write ``row`` to the store; on a database error keep it in the spool and say so on stderr."""
        row.typed()
        try:
            key = self.store.record(row)
        except SQLAlchemyError as err:
            spool_rows(self.spool, [row])
            self.spooled.append(row)
            print(f"rbl: warning: results store failed ({first_line(err)}); row kept in {self.spool}, "
                  f"imported by the next run or by `rbl task=import_rows`", file=sys.stderr)
            return row.config_hash
        self.recorded.append(row)
        return key
