"""Leaderboard: per-example worst case across rows keyed by attack config, per-example certificates, renderers."""
from __future__ import annotations

import csv
import io
import json

import pytest

from robustbench_local.leaderboard import build_entries, to_csv, to_markdown, to_robustbench_json
from robustbench_local.leaderboard_page import build_page
from robustbench_local.results import ResultRow, ResultsStore, RowSchemaError
from result_rows import certification_row, evasion_row  # tests/ is on sys.path (pytest rootdir import mode)


@pytest.fixture
def store(store_url):
    """An empty store on SQLite and on PostgreSQL."""
    store = ResultsStore(store_url)
    yield store
    store.close()


def test_entries_merge_rows_per_example_and_flag_impossible_certificates(store):
    store.record(evasion_row("a", {"pgd#1": "1100"}))
    store.record(evasion_row("a", {"apgd_ce#2": "1010"}))  # worst case over both rows: only example 0 survives
    store.record(evasion_row("b", {"pgd#1": "1110", "autoattack#3": "1110"}, aa="autoattack#3"))
    store.record(certification_row("a", "hhuv"))   # example 1 is proved robust, yet apgd_ce broke it
    store.record(evasion_row("c", {"pgd#1": "1111"}, threat="L2"))
    entries = build_entries(store, threat_model="Linf")
    assert [e.model for e in entries] == ["b", "a"]  # ranked by worst-case robust accuracy
    a = entries[1]
    assert a.robust_acc == 0.25 and a.per_attack == {"pgd": 0.5, "apgd_ce": 0.5}
    assert a.certified_acc == 0.5
    assert any("certified but broken" in f and "examples 1" in f for f in a.flags), a.flags
    assert entries[0].autoattack_acc == 0.75 and not entries[0].flags
    assert [e.model for e in build_entries(store, sort_by="clean_acc", threat_model="L2")] == ["c"]

    md = to_markdown(entries)
    assert md.splitlines()[0].startswith("| rank | model") and "| 1 | b |" in md
    table = list(csv.reader(io.StringIO(to_csv(entries))))
    assert table[0][:5] == ["rank", "model", "source", "params", "defense"] and table[2][1] == "a"
    page = build_page(store, entries)
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page and "certified but broken" in page
    record = json.loads(to_robustbench_json(a))
    assert record["clean_acc"] == "100.00" and record["reported"] == "25.00" and record["eps"] == "0.1"
    assert record["certified_acc"] == "50.00"


def test_two_differently_configured_runs_of_one_attack_both_count(store):
    # Defect: masks were merged by attack name, so the second "pgd" overwrote the first.
    store.record(evasion_row("a", {"pgd#steps10": "1101"}))
    store.record(evasion_row("a", {"pgd#steps40": "1011"}))
    (entry,) = build_entries(store)
    assert entry.robust_acc == 0.5  # examples 0 and 3 survive both
    assert entry.per_attack == {"pgd#steps10": 0.75, "pgd#steps40": 0.75}  # same name: labelled by key


def test_certificates_are_compared_per_example_not_in_aggregate(store):
    # Aggregates agree (certified 50 % <= robust 50 %), but example 0 is proved and broken at once.
    store.record(evasion_row("a", {"pgd#1": "0110"}))
    store.record(certification_row("a", "hvvh"))
    (entry,) = build_entries(store)
    assert entry.certified_acc == 0.5 and entry.robust_acc == 0.5
    assert any("certified but broken" in f and "examples 0, 3" in f for f in entry.flags), entry.flags


def test_rows_without_a_robust_accuracy_never_reach_the_leaderboard(store):
    # Defect: feature-guided rows had kind "evasion" with a success mask and no robust_acc, and the leaderboard
    # listed the model as 100 % robust. Such a row is now refused when it is made ...
    with pytest.raises(RowSchemaError, match="metrics.clean_acc is missing"):
        ResultRow(kind="evasion", dataset="mnist", model="m", attack="feature_guided_L0", threat_model="L0",
                  eps=None, metrics={"n": 2, "success_rate": 1.0, "mask": "11"}, config={})
    # ... and its proper kind (minimal perturbation) is not a leaderboard kind.
    store.record(ResultRow(kind="perturbation", dataset="mnist", model="m", attack="feature_guided_L0",
                           threat_model="L0", eps=None, config={},
                           metrics={"n": 2, "success_rate": 1.0, "success_mask": "11", "access": "black-box",
                                    "threat": "L0"}))
    assert build_entries(store) == []


def test_inconsistent_metrics_are_refused(store):
    row = evasion_row("a", {"pgd#1": "1100"})
    with pytest.raises(RowSchemaError, match="disagrees with its mask"):
        ResultRow(**{**row.__dict__, "metrics": {**row.metrics, "robust_acc": 1.0}})
    with pytest.raises(RowSchemaError, match="unknown result kind"):
        ResultRow(kind="evasoin", dataset="d", model="m", attack="a", metrics={}, config={})


def test_unbounded_rows_export_and_rows_over_other_examples_stay_apart(store, tmp_path):
    store.record(evasion_row("a", {"deepfool#1": "0000"}, eps=None))
    store.record(evasion_row("a", {"pgd#1": "11"}, clean="11", n_test=2))
    store.record(evasion_row("a", {"pgd#1": "1100"}))
    entries = build_entries(store)
    assert sorted((e.eps is None, e.n) for e in entries) == [(False, 2), (False, 4), (True, 4)]
    unbounded = next(e for e in entries if e.eps is None)
    assert json.loads(to_robustbench_json(unbounded))["eps"] is None
    assert "| unbounded |" in to_markdown(entries)


def test_two_checkpoints_under_one_name_never_merge(store):
    info = {"name": "net", "source": "onnx", "architecture": "onnx: 5 nodes", "parameters": 10, "training": "external",
            "description": ""}
    for identity, mask in (("sha256:aaaa1111", "1100"), ("sha256:bbbb2222", "1000")):
        row = evasion_row("net", {"pgd#1": mask}, identity=identity)
        row.metrics["model_info"] = {**info, "identity": identity}
        store.record(row)
    entries = build_entries(store)
    assert sorted(e.robust_acc for e in entries) == [0.25, 0.5]  # not merged into one worst case
    assert {e.identity for e in entries} == {"sha256:aaaa1111", "sha256:bbbb2222"}
    md = to_markdown(entries)
    assert "net [aaaa1111]" in md and "net [bbbb2222]" in md and "| onnx | 10 |" in md
    assert json.loads(to_robustbench_json(entries[0]))["training"] == "external"


def test_a_certification_only_entry_shows_the_clean_accuracy_it_measured(store):
    store.record(certification_row("a", "hhvu", clean="1110"))
    (entry,) = build_entries(store)
    assert entry.clean_acc == 0.75 and entry.certified_acc == 0.5 and entry.robust_acc is None
