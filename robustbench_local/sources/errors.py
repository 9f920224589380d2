"""Errors of the user-model sources: a file, class or checkpoint the suite cannot evaluate as given."""
from __future__ import annotations


class ModelSourceError(ValueError):
    """A user model that cannot be loaded or does not fit the data set; the message is one line."""


class UnsupportedOnnxOp(ModelSourceError):
    """An ONNX node whose op (or attribute value) the torch interpreter does not implement."""
