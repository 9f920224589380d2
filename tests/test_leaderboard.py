"""Leaderboard: per-example worst case across rows, certified column and flag, renderers, filters."""
from __future__ import annotations

import csv
import io
import json

from robustbench_local.leaderboard import build_entries, to_csv, to_html, to_markdown, to_robustbench_json
from robustbench_local.results import ResultRow, ResultsStore


def _evasion(model, attack, mask, clean="1111", aa=None, threat="Linf"):
    acc = mask.count("1") / len(mask)
    metrics = {"n": len(mask), "clean_acc": clean.count("1") / len(clean), "robust_acc": acc,
               "attacks": {attack: {"robust_acc": acc}}, "masks": {attack: mask}, "clean_mask": clean,
               "autoattack_acc": aa}
    return ResultRow(kind="evasion", dataset="digits", model=model, attack=attack, threat_model=threat, eps=0.1,
                     metrics=metrics, config={"attack": attack, "model": model}, time_s=1.0)


def test_entries_merge_rows_per_example_and_flag_impossible_certificates(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path}/lb.db")
    store.record(_evasion("a", "pgd", "1100"))
    store.record(_evasion("a", "apgd_ce", "1010"))  # worst case over both rows: only example 0 survives
    store.record(_evasion("b", "pgd", "1110", aa=0.75))
    store.record(ResultRow(kind="certification", dataset="digits", model="a", attack="verify", threat_model="Linf",
                           eps=0.1, metrics={"certified_acc": 0.5}, config={"v": 1}))
    store.record(_evasion("c", "pgd", "1111", threat="L2"))
    entries = build_entries(store, threat_model="Linf")
    assert [e.model for e in entries] == ["b", "a"]  # ranked by worst-case robust accuracy
    a = entries[1]
    assert a.robust_acc == 0.25 and a.per_attack == {"pgd": 0.5, "apgd_ce": 0.5}
    assert a.certified_acc == 0.5 and any("certified > empirical" in f for f in a.flags)
    assert entries[0].autoattack_acc == 0.75 and not entries[0].flags
    assert [e.model for e in build_entries(store, sort_by="clean_acc", threat_model="L2")] == ["c"]

    md = to_markdown(entries)
    assert md.splitlines()[0].startswith("| rank | model") and "| 1 | b |" in md
    table = list(csv.reader(io.StringIO(to_csv(entries))))
    assert table[0][:3] == ["rank", "model", "defense"] and table[2][1] == "a"
    page = to_html(entries)
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page and "certified &gt; empirical" in page
    record = json.loads(to_robustbench_json(a))
    assert record["clean_acc"] == "100.00" and record["reported"] == "25.00" and record["eps"] == "0.1"
    assert record["certified_acc"] == "50.00"
