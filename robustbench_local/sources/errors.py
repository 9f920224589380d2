"""Errors of the user-model sources: a file, class or checkpoint the suite cannot evaluate as given.

Both live in the core (:mod:`rbl_core.onnx.errors`), where the ONNX reader raises them; the harness re-exports them.
"""
from __future__ import annotations

from rbl_core.onnx.errors import ModelSourceError, UnsupportedOnnxOp

__all__ = ["ModelSourceError", "UnsupportedOnnxOp"]
