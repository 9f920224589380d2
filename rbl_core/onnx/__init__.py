"""The suite's one ONNX reader: :func:`load_onnx` -> :class:`OnnxGraph` (steps from :data:`OPS`), user errors."""
from rbl_core.onnx.errors import ModelSourceError, UnsupportedOnnxOp
from rbl_core.onnx.reader import OnnxGraph, load_onnx, read_onnx
from rbl_core.onnx.table import OPS, SUPPORTED_OPS

__all__ = ["ModelSourceError", "UnsupportedOnnxOp", "OnnxGraph", "load_onnx", "read_onnx", "OPS", "SUPPORTED_OPS"]
