"""Results: typed rows per kind, the SQLAlchemy store, and the local spool that loses nothing."""
from __future__ import annotations

from robustbench_local.results.kinds import KINDS, Metrics, RowSchemaError, decode_mask, encode_mask, parse_metrics, register_kind
import robustbench_local.results.curves  # noqa: F401 - registers the curve kind
import robustbench_local.results.jobs  # noqa: F401 - registers the job kind
from robustbench_local.results.store import DEFAULT_URL, ResultRow, ResultsStore, StoreError, config_hash, library_versions

__all__ = ["KINDS", "Metrics", "RowSchemaError", "decode_mask", "encode_mask", "parse_metrics", "register_kind",
           "DEFAULT_URL", "ResultRow", "ResultsStore", "StoreError", "config_hash", "library_versions"]
