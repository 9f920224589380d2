"""The markdown table of a caption-attack run (rows of kind "caption")."""
from __future__ import annotations

from robustbench_local.results import ResultRow


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, nd: int = 2) -> str:
    return "-" if value is None else f"{value:.{nd}f}"


def _eps(eps: float) -> str:
    # natural-image budgets read as k/255; the MNIST ones (0.1, 0.2, 0.3) as they are
    k = round(eps * 255)
    return f"{k}/255" if 1 <= k <= 32 and abs(eps * 255 - k) < 1e-6 else f"{eps:g}"


def markdown_table(rows: list[ResultRow]) -> str:
    """One line per attack row: success (exact match / keyword hit), BLEU-4 to target, distances and transfer."""
    lines = ["| attack | strategy | eps | n | success % | clean % | BLEU-4 to target | feature dist. (clean / natural) | "
             "transfer success % | transfer BLEU-4 | max Linf | mean L2 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row.metrics
        attack = row.attack.split(":")[0]
        lines.append(f"| {attack} | {m['strategy']} | {_eps(row.eps)} | {m['n']} | {_pct(m['success_rate'])} | "
                     f"{_pct(m.get('clean_success_rate'))} | {_num(m['bleu_to_target'], 3)} | "
                     f"{_num(m.get('feature_distance'))} ({_num(m.get('clean_feature_distance'))} / "
                     f"{_num(m.get('natural_distance'))}) | {_pct(m.get('transfer_success_rate'))} | "
                     f"{_num(m.get('transfer_bleu_to_target'), 3)} | {_num(m.get('max_linf'), 4)} | "
                     f"{_num(m.get('mean_l2'))} |")
    return "\n".join(lines)
