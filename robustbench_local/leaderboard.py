"""Leaderboard tables built from the results database: markdown, CSV, HTML and RobustBench JSON."""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import asdict, dataclass, field

from robustbench_local.results import ResultsStore


@dataclass
class Entry:
    """One (dataset, model, defense, threat model, eps) line of the leaderboard."""

    dataset: str
    model: str
    defense: str
    threat_model: str
    eps: float | None
    n: int = 0
    clean_acc: float | None = None
    autoattack_acc: float | None = None
    robust_acc: float | None = None
    certified_acc: float | None = None
    per_attack: dict[str, float] = field(default_factory=dict)
    time_s: float = 0.0
    flags: list[str] = field(default_factory=list)
    rank: int = 0


def _and_masks(masks: list[str]) -> str:
    return "".join("1" if all(m[i] == "1" for m in masks) else "0" for i in range(len(masks[0])))


def _merge_evasion(entry: Entry, rows: list[dict]) -> None:
    # Rows over the same examples (same n, same first-n test split) combine per example: worst case.
    masks: dict[str, str] = {}
    for row in rows:
        m = row["metrics"]
        entry.n = m.get("n", entry.n)
        entry.clean_acc = m.get("clean_acc", entry.clean_acc)
        entry.time_s += row["time_s"]
        if m.get("autoattack_acc") is not None:
            entry.autoattack_acc = m["autoattack_acc"]
        for name, summary in m.get("attacks", {}).items():
            entry.per_attack[name] = summary["robust_acc"]
        masks.update(m.get("masks", {}))
        if "clean_mask" in m:
            masks["__clean__"] = m["clean_mask"]
    same_length = {len(v) for v in masks.values()}
    if masks and len(same_length) == 1:
        worst = _and_masks(list(masks.values()))
        entry.robust_acc = worst.count("1") / len(worst)
    elif rows:
        entry.robust_acc = min(r["metrics"].get("robust_acc", 1.0) for r in rows)


def build_entries(store: ResultsStore, dataset: str | None = None, threat_model: str | None = None,
                  sort_by: str = "robust_acc") -> list[Entry]:
    """Leaderboard entries for the filters, ranked by ``sort_by`` (descending)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in store.rows(dataset=dataset, threat_model=threat_model):
        if row["kind"] not in ("evasion", "certification") or row["status"] != "ok":
            continue
        key = (row["dataset"], row["model"], row["defense"], row["threat_model"], row["eps"])
        groups.setdefault(key, {"evasion": [], "certification": []})[row["kind"]].append(row)
    entries = []
    for key, kinds in groups.items():
        entry = Entry(*key)
        _merge_evasion(entry, kinds["evasion"])
        for row in kinds["certification"]:
            cert = row["metrics"].get("certified_acc")
            if cert is not None:
                entry.certified_acc = cert if entry.certified_acc is None else max(entry.certified_acc, cert)
        if entry.certified_acc is not None and entry.robust_acc is not None and entry.certified_acc > entry.robust_acc + 1e-9:
            entry.flags.append("certified > empirical robust accuracy: a bug in an attack or the verifier")
        entries.append(entry)
    if sort_by not in ("robust_acc", "clean_acc", "autoattack_acc", "certified_acc", "time_s"):
        raise ValueError(f"cannot sort by {sort_by!r}: choose robust_acc, clean_acc, autoattack_acc, certified_acc or time_s")
    entries.sort(key=lambda e: (getattr(e, sort_by) is not None, getattr(e, sort_by) or 0.0), reverse=True)
    for i, entry in enumerate(entries, 1):
        entry.rank = i
    return entries


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _attack_names(entries: list[Entry]) -> list[str]:
    # AutoAttack standard has its own column.
    return sorted({name for e in entries for name in e.per_attack if name != "autoattack"})


def table_rows(entries: list[Entry]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by every renderer."""
    attacks = _attack_names(entries)
    header = ["rank", "model", "defense", "dataset", "threat", "eps", "n", "clean %", "AutoAttack %",
              "robust % (worst case)", "certified %"] + [f"{a} %" for a in attacks] + ["time s", "flags"]
    rows = []
    for e in entries:
        rows.append([str(e.rank), e.model, e.defense, e.dataset, e.threat_model, "" if e.eps is None else f"{e.eps:g}",
                     str(e.n), _pct(e.clean_acc), _pct(e.autoattack_acc), _pct(e.robust_acc), _pct(e.certified_acc)]
                    + [_pct(e.per_attack.get(a)) for a in attacks] + [f"{e.time_s:.1f}", "; ".join(e.flags)])
    return header, rows


def to_markdown(entries: list[Entry]) -> str:
    """A GitHub-flavoured markdown table."""
    header, rows = table_rows(entries)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_csv(entries: list[Entry]) -> str:
    """CSV with the markdown table's columns."""
    header, rows = table_rows(entries)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>robustbench-local leaderboard</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{cursor:pointer;background:#f4f4f4}}
td:nth-child(2),td:nth-child(3),td:nth-child(4){{text-align:left}}.flag{{color:#b00}}</style></head>
<body><h1>robustbench-local leaderboard</h1><p>Click a column header to sort. Robust accuracy is the
per-example worst case over all attacks run; certified accuracy comes from the verifier.</p>
<table id="lb"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<script>
document.querySelectorAll('#lb th').forEach(function(th, col) {{
  th.addEventListener('click', function() {{
    var body = document.querySelector('#lb tbody');
    var rows = Array.from(body.rows);
    var desc = th.dataset.desc !== 'true'; th.dataset.desc = desc;
    rows.sort(function(a, b) {{
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var cmp = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return desc ? -cmp : cmp;
    }});
    rows.forEach(function(r) {{ body.appendChild(r); }});
  }});
}});
</script></body></html>
"""


def to_html(entries: list[Entry]) -> str:
    """One self-contained HTML page with a client-side sortable table."""
    header, rows = table_rows(entries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{"flag" if i == len(r) - 1 and c else ""}">{html.escape(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return _HTML.format(head=head, body=body)


def _eps_string(eps: float | None) -> str | None:
    if eps is None:
        return None
    # RobustBench writes budgets like 8/255 as fractions; short decimals (0.1, 0.5) stay decimals.
    short, k = f"{eps:g}", eps * 255
    return f"{round(k)}/255" if len(short) > 5 and abs(k - round(k)) < 1e-6 else short


def to_robustbench_json(entry: Entry) -> str:
    """A RobustBench ``model_info`` JSON record for one entry (accuracies as percent strings)."""
    record = {"link": "", "name": entry.model, "authors": "", "additional_data": False,
              "number_forward_passes": 1, "dataset": entry.dataset, "venue": "robustbench-local",
              "architecture": entry.model, "eps": _eps_string(entry.eps), "clean_acc": _pct(entry.clean_acc),
              "reported": _pct(entry.robust_acc), "autoattack_acc": _pct(entry.autoattack_acc),
              "footnote": "; ".join(entry.flags) or None, "defense": entry.defense,
              "threat_model": entry.threat_model, "n_examples": entry.n,
              "certified_acc": _pct(entry.certified_acc) or None,
              "per_attack_acc": {k: _pct(v) for k, v in entry.per_attack.items()}}
    return json.dumps(record, indent=2)


def entry_dict(entry: Entry) -> dict:
    """The entry as a plain dict (for tests and scripting)."""
    return asdict(entry)
