"""Leaderboard tables built from the results database: markdown, CSV and RobustBench JSON (the page: leaderboard_page)."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field

from robustbench_local.results import Metrics, ResultsStore, parse_metrics
from robustbench_local.results.schemas import CertificationMetrics, EvasionMetrics

LEADERBOARD_KINDS = ("evasion", "certification")
SORT_KEYS = ("robust_acc", "clean_acc", "autoattack_acc", "certified_acc", "time_s")


@dataclass
class Entry:
    """One (dataset, model and its identity, defense, threat model, eps, n) line of the leaderboard."""

    dataset: str
    model: str
    identity: str | None          # recipe or file hash: two checkpoints under one name stay apart
    defense: str
    threat_model: str
    eps: float | None
    n: int
    model_info: dict = field(default_factory=dict)   # source, architecture, parameters, training, description
    clean_acc: float | None = None
    autoattack_acc: float | None = None
    robust_acc: float | None = None
    unaware_acc: float | None = None   # worst case over defense-unaware (transferred) attacks only
    attack_mode: str = ""              # how the headline attacks saw the defense: white-box, e2e, bpda, eot
    certified_acc: float | None = None
    per_attack: dict[str, float] = field(default_factory=dict)
    time_s: float = 0.0
    flags: list[str] = field(default_factory=list)
    rank: int = 0
    rows: list[str] = field(default_factory=list)    # config hashes of the rows merged into this entry


def _and(masks: list[str]) -> str:
    return "".join("1" if all(m[i] == "1" for m in masks) else "0" for i in range(len(masks[0])))


def _share(mask: str) -> float:
    return mask.count("1") / len(mask) if mask else 0.0


def _indices(mask: str, limit: int = 10) -> str:
    hits = [str(i) for i, c in enumerate(mask) if c == "1"]
    return ", ".join(hits[:limit]) + (f" and {len(hits) - limit} more" if len(hits) > limit else "")


@dataclass
class _Evidence:
    """Per-example evidence of one entry, merged over all its rows."""

    clean: list[str] = field(default_factory=list)
    masks: dict[str, list[str]] = field(default_factory=dict)   # attack key -> masks of every row with it
    names: dict[str, str] = field(default_factory=dict)         # attack key -> attack name
    autoattack: set[str] = field(default_factory=set)           # keys of AutoAttack standard runs
    statuses: list[str] = field(default_factory=list)           # certification statuses, one string per row
    cert_clean: list[float] = field(default_factory=list)       # clean accuracy the verifier's rows measured
    unaware: set[str] = field(default_factory=set)              # keys of defense-unaware attacks
    modes: set[str] = field(default_factory=set)                # adaptive modes of the other rows


def _collect(entry: Entry, rows: list[tuple[dict, Metrics]]) -> _Evidence:
    ev = _Evidence()
    for row, typed in rows:
        entry.time_s += row["time_s"]
        entry.rows.append(row["config_hash"])
        if typed.model_info:
            entry.model_info = dict(typed.model_info)
        if isinstance(typed, CertificationMetrics):
            ev.statuses.append(typed.statuses)
            ev.cert_clean.append(typed.clean_acc)
            continue
        assert isinstance(typed, EvasionMetrics)
        ev.clean.append(typed.clean_mask)
        unaware = typed.adaptive == "unaware"
        if not unaware:
            ev.modes.add(typed.adaptive or "white-box")
        for key, mask in typed.masks.items():
            # Transferred (defense-unaware) results get their own keys and columns.
            stored = f"unaware:{key}" if unaware else key
            ev.masks.setdefault(stored, []).append(mask)
            ev.names[stored] = typed.attacks[key]["name"] + (" unaware" if unaware else "")
            if unaware:
                ev.unaware.add(stored)
        if typed.autoattack_key is not None:
            ev.autoattack.add(typed.autoattack_key)
    return ev


def _fill(entry: Entry, ev: _Evidence) -> None:
    worst = None
    if ev.clean:
        clean = _and(ev.clean)
        if len(set(ev.clean)) > 1:
            entry.flags.append("clean predictions differ between rows of this entry: was the model retrained?")
        merged = {key: _and([clean, *masks]) for key, masks in ev.masks.items()}
        # The headline needs an adaptive (or plain white-box) attack; it is then the per-example worst case over
        # every attack run, transferred ones included, since each example is re-measured on the defended model.
        adaptive = [k for k in merged if k not in ev.unaware]
        worst = _and([clean, *merged.values()])
        entry.clean_acc = _share(clean)
        entry.attack_mode = "+".join(sorted(ev.modes))
        if ev.unaware:
            entry.unaware_acc = _share(_and([clean, *(merged[k] for k in ev.unaware)]))
        if adaptive or not ev.unaware:
            entry.robust_acc = _share(worst)
        else:
            worst = None
            entry.flags.append("defense-unaware attacks only: no robust accuracy is claimed")
        names = list(ev.names.values())
        for key, mask in merged.items():
            label = ev.names[key] if names.count(ev.names[key]) == 1 else key
            entry.per_attack[label] = _share(mask)
        if ev.autoattack:
            entry.autoattack_acc = _share(_and([clean, *(merged[k] for k in ev.autoattack)]))
    if entry.clean_acc is None and len(set(ev.cert_clean)) == 1:
        entry.clean_acc = ev.cert_clean[0]   # no attack rows: the clean accuracy the certification rows measured
    if ev.statuses:
        # A proof from any row certifies the example; a proof and a confirmed counterexample contradict.
        proved = "".join("1" if any(s[i] == "h" for s in ev.statuses) else "0" for i in range(entry.n))
        refuted = "".join("1" if any(s[i] == "v" for s in ev.statuses) else "0" for i in range(entry.n))
        entry.certified_acc = _share(proved)
        both = _and([proved, refuted])
        if "1" in both:
            entry.flags.append(f"verifier contradiction: proved and refuted at examples {_indices(both)}")
        if worst is not None:
            broken = "".join("1" if p == "1" and w == "0" else "0" for p, w in zip(proved, worst))
            if "1" in broken:
                entry.flags.append("certified but broken by an attack (a bug in an attack or the verifier) at "
                                   f"examples {_indices(broken)}")


def build_entries(store: ResultsStore, dataset: str | None = None, threat_model: str | None = None,
                  sort_by: str = "robust_acc") -> list[Entry]:
    """Leaderboard entries for the filters, ranked by ``sort_by`` (descending)."""
    if sort_by not in SORT_KEYS:
        raise ValueError(f"cannot sort by {sort_by!r}: choose one of {', '.join(SORT_KEYS)}")
    groups: dict[tuple, list[tuple[dict, Metrics]]] = {}
    for row in store.rows(dataset=dataset, threat_model=threat_model):
        if row["kind"] not in LEADERBOARD_KINDS or row["status"] != "ok":
            continue
        typed = parse_metrics(row["kind"], row["metrics"])
        # Rows combine per example only over the same examples (the same n of the same test split), and only
        # for the same weights (the model's identity).
        identity = typed.model_info["identity"] if typed.model_info else None
        key = (row["dataset"], row["model"], identity, row["defense"], row["threat_model"], row["eps"], typed.n)
        groups.setdefault(key, []).append((row, typed))
    entries = []
    for key, rows in groups.items():
        entry = Entry(*key)
        _fill(entry, _collect(entry, rows))
        entries.append(entry)
    # Ties rank by name and budget, not by which row a parallel sweep happened to write first.
    entries.sort(key=lambda e: (e.dataset, e.model, e.identity or "", e.defense, e.threat_model,
                                -1.0 if e.eps is None else e.eps, e.n))
    entries.sort(key=lambda e: (getattr(e, sort_by) is not None, getattr(e, sort_by) or 0.0), reverse=True)
    for i, entry in enumerate(entries, 1):
        entry.rank = i
    return entries


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _attack_names(entries: list[Entry]) -> list[str]:
    # AutoAttack standard has its own column.
    return sorted({name for e in entries for name in e.per_attack if name != "autoattack"})


def eps_label(eps: float | None) -> str:
    """The budget as written in tables and file names; None is an unbounded (minimisation) attack."""
    return "unbounded" if eps is None else f"{eps:g}"


def table_rows(entries: list[Entry]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by every renderer."""
    attacks = _attack_names(entries)
    names = [e.model for e in entries]
    header = ["rank", "model", "source", "params", "defense", "dataset", "threat", "eps", "n", "clean %", "AutoAttack %",
              "robust % (worst case)", "attack mode", "unaware robust %", "certified %"] + [f"{a} %" for a in attacks] + ["time s", "flags"]
    rows = []
    for e in entries:
        label = e.model if names.count(e.model) == 1 or not e.identity else f"{e.model} [{e.identity[-8:]}]"
        params = e.model_info.get("parameters")
        rows.append([str(e.rank), label, e.model_info.get("source", ""), "" if params is None else f"{params:,}", e.defense, e.dataset, e.threat_model, eps_label(e.eps),
                     str(e.n), _pct(e.clean_acc), _pct(e.autoattack_acc), _pct(e.robust_acc), e.attack_mode,
                     _pct(e.unaware_acc), _pct(e.certified_acc)]
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
              "architecture": entry.model_info.get("architecture", ""), "eps": _eps_string(entry.eps), "clean_acc": _pct(entry.clean_acc),
              "reported": _pct(entry.robust_acc), "autoattack_acc": _pct(entry.autoattack_acc),
              "footnote": "; ".join(entry.flags) or None, "defense": entry.defense,
              "threat_model": entry.threat_model, "n_examples": entry.n,
              "certified_acc": _pct(entry.certified_acc) or None,
              "per_attack_acc": {k: _pct(v) for k, v in entry.per_attack.items()},
              "source": entry.model_info.get("source"), "parameters": entry.model_info.get("parameters"),
              "training": entry.model_info.get("training"), "description": entry.model_info.get("description"),
              "identity": entry.identity}
    return json.dumps(record, indent=2)


def entry_dict(entry: Entry) -> dict:
    """The entry as a plain dict (for tests and scripting)."""
    return asdict(entry)
