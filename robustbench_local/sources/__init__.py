"""User-model sources: ONNX files and torch classes with safe weights, turned into suite models.

One concept per module: ``onnx_source`` (``model=onnx``: the core ONNX reader's graph, laid out for images), ``checkpoints``
(safe state-dict loading), ``preprocessing`` (resize / channel order / normalisation folded into the
model) and ``models`` (the entry point the harness calls, plus the ``ModelInfo`` it records).
"""
from __future__ import annotations

from robustbench_local.sources.errors import ModelSourceError, UnsupportedOnnxOp

__all__ = ["ModelSourceError", "UnsupportedOnnxOp"]
