"""The leaderboard of kind "caption": captioners ranked by how well they resist controlled-caption attacks.

One entry per (data set, captioner, eps): its clean exact match, and per attack and strategy the success rate
(targeted exact match or keyword hit) of the latest row; the headline is the worst case (the highest success) over
the attacks run at that eps. Robust-accuracy rows (evasion, certification) have their own leaderboard.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robustbench_local.results import ResultsStore, parse_metrics


@dataclass
class CaptionEntry:
    """One (dataset, captioner, eps) line."""

    dataset: str
    model: str
    eps: float
    clean_exact_match: float | None = None
    success: dict[str, float] = field(default_factory=dict)   # "attack:strategy" -> success rate
    rank: int = 0

    @property
    def worst_success(self) -> float | None:
        """The highest attack success rate at this eps."""
        return max(self.success.values()) if self.success else None


def build_caption_entries(store: ResultsStore, dataset: str | None = None) -> list[CaptionEntry]:
    """Caption entries from ``store``, most robust (lowest worst-case success) first."""
    clean: dict[tuple[str, str], float] = {}
    entries: dict[tuple[str, str, float], CaptionEntry] = {}
    for row in store.rows(kind="caption", dataset=dataset, status="ok"):
        typed = parse_metrics("caption", row["metrics"])
        if typed.strategy == "clean":
            clean[(row["dataset"], row["model"])] = typed.success_rate
            continue
        key = (row["dataset"], row["model"], float(row["eps"]))
        entry = entries.setdefault(key, CaptionEntry(*key))
        entry.success[row["attack"]] = typed.success_rate   # later rows replace earlier ones of the same attack
    out = sorted(entries.values(), key=lambda e: (e.dataset, e.model, e.eps))
    for entry in out:
        entry.clean_exact_match = clean.get((entry.dataset, entry.model))
    out.sort(key=lambda e: (e.worst_success is None, e.worst_success or 0.0))
    for i, entry in enumerate(out, 1):
        entry.rank = i
    return out


def caption_markdown(entries: list[CaptionEntry]) -> str:
    """The caption leaderboard as a markdown table (success rates in percent)."""
    attacks = sorted({a for e in entries for a in e.success})
    lines = ["| rank | captioner | dataset | eps | clean exact match % | worst-case success % | "
             + " | ".join(f"{a} %" for a in attacks) + " |", "|" + "---|" * (6 + len(attacks))]
    for e in entries:
        cells = [f"{100 * e.success[a]:.1f}" if a in e.success else "" for a in attacks]
        clean = "" if e.clean_exact_match is None else f"{100 * e.clean_exact_match:.1f}"
        lines.append(f"| {e.rank} | {e.model} | {e.dataset} | {e.eps:g} | {clean} | "
                     f"{100 * (e.worst_success or 0):.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
