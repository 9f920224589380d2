"""The user errors of reading a model file: one line each, and the CLI turns them into exit 2 (no traceback)."""
from __future__ import annotations


class ModelSourceError(ValueError):
    """A user model that cannot be loaded or does not fit the data set; the message is one line."""


class UnsupportedOnnxOp(ModelSourceError):
    """An ONNX node whose op (or attribute value) the reader does not implement; names the file, node and op."""


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else '(no message)'}"
