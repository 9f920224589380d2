"""Writing matplotlib figures to disk the same way everywhere (headless backend, folders made, memory freed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

from matplotlib.figure import Figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure"]  # every figure module takes pyplot from here, so one backend is set


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating folders), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
