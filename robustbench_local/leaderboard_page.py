"""The leaderboard as one self-contained HTML page: sortable, filterable, every row opening its details.

Everything on the page comes from the store: the table is ``leaderboard.table_rows`` (so every renderer shows
the same columns) plus the entry's kinds and the certified-vs-empirical gap; a row's details show the rows it
merges (config, versions, per-attack numbers, figures they wrote), its model's robustness curves, and the
page ends with the sweep jobs that failed or never finished. No network: styles, script and images are inline.
"""
from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from pathlib import Path

from robustbench_local.curves import Curve, curves_by_model, entry_model_key, plot_curves
from robustbench_local.leaderboard import Entry, table_rows
from robustbench_local.results import ResultsStore
from robustbench_local.results.jobs import job_report

PAGE_TEMPLATE = Path(__file__).with_name("leaderboard_page.html")
MAX_FIGURE_BYTES = 2_000_000   # a run's own figure larger than this is linked by path, not embedded


def _e(value: object) -> str:
    return html.escape(str(value))


def gap_pp(entry: Entry) -> float | None:
    """Empirical (worst-case attack) minus certified robust accuracy in percentage points, when both exist.

    Attacks give an upper bound on robustness, the verifier a lower one; the gap is what neither settles.
    """
    if entry.robust_acc is None or entry.certified_acc is None:
        return None
    return 100 * (entry.robust_acc - entry.certified_acc)


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _curve_images(curves: dict[tuple, list[Curve]], folder: Path) -> dict[str, str]:
    """One embedded PNG per model key (``k0``, ``k1``, ...) in the order of ``curves``."""
    return {f"k{i}": _png_uri(plot_curves(cs, folder / f"k{i}.png", f"{key[1]} ({key[3]}), {key[0]}, {key[4]}"))
            for i, (key, cs) in enumerate(curves.items())}


def _figure(path_text: str) -> str:
    path = Path(path_text)
    if path.suffix.lower() == ".png" and path.is_file() and path.stat().st_size <= MAX_FIGURE_BYTES:
        return f'<figure><img class="run-figure" src="{_png_uri(path)}" alt="{_e(path.name)}"><figcaption>{_e(path)}</figcaption></figure>'
    return f'<p class="missing">figure {_e(path)} (not embedded: missing, not a PNG or too large)</p>'


def _attack_table(metrics: dict) -> str:
    attacks = metrics.get("attacks")
    if not isinstance(attacks, dict):
        return ""
    head = "<tr><th>attack</th><th>key</th><th>robust %</th><th>median distance</th><th>time s</th></tr>"
    def num(value: object, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    body = "".join(
        f'<tr class="attack" data-key="{_e(key)}"><td>{_e(a["name"])}</td><td>{_e(key)}</td>'
        f'<td class="num">{100 * a["robust_acc"]:.2f}</td><td class="num">{num(a.get("median_distance"), 4)}</td>'
        f'<td class="num">{num(a.get("time_s"), 2)}</td></tr>'
        for key, a in sorted(attacks.items()))
    return f'<table class="attacks">{head}{body}</table>'


def _row_details(row: dict) -> str:
    m = row["metrics"]
    figures = "".join(_figure(p) for p in m.get("figures", []) if isinstance(p, str))
    return (f'<div class="row-detail" data-hash="{_e(row["config_hash"])}"><h4>{_e(row["kind"])} row '
            f'<code>{_e(row["config_hash"][:12])}</code>: {_e(row["attack"])}, {row["time_s"]:.1f} s, '
            f'{_e(row["created_at"])}</h4>{_attack_table(m)}{figures}'
            f'<details><summary>config</summary><pre class="config">{_e(json.dumps(row["config"], indent=1, sort_keys=True))}</pre></details>'
            f'<details><summary>versions</summary><pre class="versions">{_e(json.dumps(row["versions"], indent=1, sort_keys=True))}</pre></details></div>')


def _curve_table(curves: list[Curve]) -> str:
    rows = "".join(f'<tr><td>{_e(c.label)}</td><td>{_e(c.source)}</td><td>{_e(f"{eps:g}")}</td>'
                   f'<td class="num">{100 * acc:.2f}</td></tr>'
                   for c in curves for eps, acc in zip(c.epsilons, c.robust_acc))
    return (f'<table class="curve-points"><tr><th>curve</th><th>from</th><th>eps</th><th>robust %</th></tr>'
            f'{rows}</table>')


def _details(entry: Entry, rows: dict[str, dict], curves: list[Curve], image_key: str | None, width: int) -> str:
    info = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in sorted(entry.model_info.items()))
    flags = "".join(f"<li>{_e(f)}</li>" for f in entry.flags) or "<li>none</li>"
    curve = ""
    if curves:
        img = f'<img class="curve" data-key="{image_key}" alt="robustness curves">' if image_key else ""
        curve = f"<h4>Robustness curves of this model</h4>{img}{_curve_table(curves)}"
    parts = "".join(_row_details(rows[h]) for h in entry.rows)
    return (f'<tr class="details" hidden><td colspan="{width}"><div class="panel">'
            f'<h3>{_e(entry.model)} ({_e(entry.defense)}), {_e(entry.dataset)} {_e(entry.threat_model)}</h3>'
            f'<dl>{info}</dl><h4>Flags</h4><ul class="flags">{flags}</ul>{curve}'
            f'<h4>Rows merged into this entry</h4>{parts}</div></td></tr>')


def _kinds(entry: Entry, rows: dict[str, dict]) -> str:
    return " ".join(sorted({rows[h]["kind"] for h in entry.rows}))


def _table(entries: list[Entry], rows: dict[str, dict], curves: dict[tuple, list[Curve]],
           keys: dict[tuple, str]) -> str:
    header, cells = table_rows(entries)
    at = header.index("certified %") + 1
    header = header[:at] + ["gap pp", "kind"] + header[at:]
    head = "".join(f'<th data-col="{i}" title="click to sort">{_e(h)}</th>' for i, h in enumerate(header))
    body = []
    for entry, row in zip(entries, cells):
        gap, kinds = gap_pp(entry), _kinds(entry, rows)
        row = row[:at] + ["" if gap is None else f"{gap:.2f}", kinds] + row[at:]
        tds = []
        for i, cell in enumerate(row):
            cls = "gap" if i == at and gap is not None and abs(gap) > 1e-9 else ("flag" if i == len(row) - 1 and cell else "")
            tds.append(f'<td class="{cls}">{_e(cell)}</td>')
        body.append(f'<tr class="entry" data-dataset="{_e(entry.dataset)}" data-threat="{_e(entry.threat_model)}" '
                    f'data-defense="{_e(entry.defense)}" data-kind="{_e(kinds)}" tabindex="0">{"".join(tds)}</tr>')
        key = entry_model_key(entry)
        body.append(_details(entry, rows, curves.get(key, []), keys.get(key), len(header)))
    return f'<table id="lb"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _select(name: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return f'<label>{label} <select id="filter-{name}" data-attr="{name}"><option value="">all</option>{options}</select></label>'


def _jobs(store: ResultsStore) -> str:
    jobs = [j for j in job_report(store) if j["status"] != "ok"]
    done = len(job_report(store, "ok"))
    items = "".join(f'<li class="job {_e(j["status"])}"><b>{_e(j["status"])}</b> <code>{_e(" ".join(j["overrides"]))}</code>: '
                    f'{_e(j["error"] or "no outcome recorded (killed, or still running)")}</li>' for j in jobs)
    return (f'<section id="jobs"><h2>Sweep jobs</h2><p>{done} ok, {sum(j["status"] == "failed" for j in jobs)} failed, '
            f'{sum(j["status"] == "running" for j in jobs)} started but not finished. Failed rows never count '
            f'here; re-running the sweep runs only these.</p><ul>{items}</ul></section>')


def build_page(store: ResultsStore, entries: list[Entry], dataset: str | None = None,
               threat_model: str | None = None) -> str:
    """The page for ``entries`` (built from ``store`` with the same filters), as one HTML string."""
    rows = {r["config_hash"]: r for r in store.rows()}
    curves = curves_by_model(store, dataset=dataset, threat_model=threat_model)
    with tempfile.TemporaryDirectory(prefix="rbl-page-") as folder:
        images = _curve_images(curves, Path(folder))
        overview = plot_curves([Curve(f"{k[1]}/{c.label}", c.epsilons, c.robust_acc, c.source)
                                for k, cs in curves.items() for c in cs], Path(folder) / "all.png",
                               "robust accuracy against eps") if curves else None
        overview_img = f'<img id="curves-all" src="{_png_uri(overview)}" alt="all robustness curves">' if overview else \
            "<p>No curves yet: run <code>rbl task=curve</code> or fixed-eps evaluations at several eps.</p>"
    keys = {key: f"k{i}" for i, key in enumerate(curves)}
    filters = "".join(_select(name, label, sorted({getattr(e, attr) for e in entries}))
                      for name, label, attr in (("dataset", "data set", "dataset"), ("threat", "threat model", "threat_model"),
                                                ("defense", "defense", "defense")))
    filters += _select("kind", "kind", sorted({k for e in entries for k in _kinds(e, rows).split()}))
    parts = {"filters": filters, "table": _table(entries, rows, curves, keys), "curves": overview_img,
             "jobs": _jobs(store), "count": str(len(entries)),
             "images": json.dumps(images).replace("</", "<\\/")}   # JSON inside <script>: no closing tag
    # One pass, so text from the store that looks like a placeholder is never substituted.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], PAGE_TEMPLATE.read_text(encoding="utf-8"))
