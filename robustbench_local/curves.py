"""Robustness curves (robust accuracy against eps) per evaluated model, read from the results database.

Two sources: ``curve`` rows (one attack run gives every budget) and the leaderboard's fixed-eps entries (the
per-example worst case at each budget some row evaluated). Plots go through ``rbl_core.figures``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rbl_core.figures import plt, save_figure
from robustbench_local.leaderboard import Entry, build_entries
from robustbench_local.results import ResultsStore, parse_metrics

ONE_RUN, FIXED_EPS = "attack run", "fixed-eps rows"


@dataclass(frozen=True)
class Curve:
    """Robust accuracy at ascending budgets, and where the points come from (ONE_RUN or FIXED_EPS)."""

    label: str
    epsilons: list[float]
    robust_acc: list[float]
    source: str


def model_key(dataset: str, model: str, identity: str | None, defense: str, threat_model: str, n: int) -> tuple:
    """What one model's curves share: a leaderboard entry's key without the budget."""
    return (dataset, model, identity, defense, threat_model, n)


def entry_model_key(entry: Entry) -> tuple:
    """``model_key`` of a leaderboard entry."""
    return model_key(entry.dataset, entry.model, entry.identity, entry.defense, entry.threat_model, entry.n)


def curves_by_model(store: ResultsStore, dataset: str | None = None,
                    threat_model: str | None = None) -> dict[tuple, list[Curve]]:
    """Every model's curves: one per ``curve`` row, plus the worst case of its fixed-eps entries."""
    out: dict[tuple, list[Curve]] = {}
    for row in store.rows(kind="curve", status="ok", dataset=dataset, threat_model=threat_model):
        typed = parse_metrics("curve", row["metrics"])
        identity = typed.model_info["identity"] if typed.model_info else None
        key = model_key(row["dataset"], row["model"], identity, row["defense"], row["threat_model"], typed.n)
        out.setdefault(key, []).append(Curve(typed.attack_name, list(typed.epsilons), list(typed.robust_acc), ONE_RUN))
    points: dict[tuple, list[tuple[float, float]]] = {}
    for entry in build_entries(store, dataset=dataset, threat_model=threat_model):
        if entry.eps is not None and entry.robust_acc is not None:
            points.setdefault(entry_model_key(entry), []).append((entry.eps, entry.robust_acc))
    for key, pts in points.items():
        pts.sort()
        out.setdefault(key, []).append(Curve("worst case", [p[0] for p in pts], [p[1] for p in pts], FIXED_EPS))
    return out


def plot_curves(curves: list[Curve], path: str | Path, title: str) -> Path:
    """One PNG of ``curves``: robust accuracy (%) against eps; fixed-eps points dashed with markers."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for curve in curves:
        style = {"linestyle": "--", "marker": "o"} if curve.source == FIXED_EPS else {"marker": "."}
        ax.plot(curve.epsilons, [100 * a for a in curve.robust_acc], label=f"{curve.label} ({curve.source})", **style)
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy %")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    return save_figure(fig, path)
