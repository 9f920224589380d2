"""The answer of a verification run: holds, violated (with a re-checked counterexample) or unknown."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HOLDS, VIOLATED, UNKNOWN = "holds", "violated", "unknown"


@dataclass
class Verdict:
    """``status`` is ``holds`` (proved), ``violated`` (counterexample re-checked) or ``unknown`` (``reason``)."""

    status: str
    counterexample: np.ndarray | None = None   # flat input
    output: np.ndarray | None = None           # network output at the counterexample
    reason: str = ""
    time_s: float = 0.0
    engine: str = ""
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in (HOLDS, VIOLATED, UNKNOWN):
            raise ValueError(f"status must be holds/violated/unknown, got {self.status!r}")
        if self.status == VIOLATED and self.counterexample is None:
            raise ValueError("a 'violated' verdict needs its counterexample")

    @property
    def vnncomp(self) -> str:
        """The VNN-COMP result word: unsat (holds), sat (violated), timeout or unknown."""
        if self.status == HOLDS:
            return "unsat"
        if self.status == VIOLATED:
            return "sat"
        return "timeout" if "timeout" in self.reason else "unknown"
