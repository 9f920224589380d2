"""The caption leaderboard: rows of kind "caption" ranked by their worst-case attack success; the schema checks them."""
from __future__ import annotations

import pytest

from robustbench_local.leaderboard_caption import build_caption_entries, caption_markdown
from robustbench_local.results import ResultRow, ResultsStore, RowSchemaError


def _row(model: str, attack: str, strategy: str, eps: float, mask: str) -> ResultRow:
    metrics = {"n": len(mask), "strategy": strategy, "success_rate": mask.count("1") / len(mask),
               "success_mask": mask, "bleu_to_target": 0.5}
    return ResultRow(kind="caption", dataset="mnist_captions", model=model, attack=attack, threat_model="Linf",
                     eps=eps, metrics=metrics, config={"model": model, "attack": attack, "eps": eps})


def test_caption_leaderboard_ranks_by_worst_case_success(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    for row in (_row("a", "clean", "clean", 0.0, "1110"), _row("a", "gan:targeted", "targeted", 0.3, "1000"),
                _row("a", "decoder_gradient:targeted", "targeted", 0.3, "1110"),
                _row("b", "clean", "clean", 0.0, "1111"), _row("b", "gan:targeted", "targeted", 0.3, "0000")):
        store.record(row)
    entries = build_caption_entries(store)
    store.close()
    assert [(e.model, e.rank) for e in entries] == [("b", 1), ("a", 2)]
    assert entries[1].worst_success == 0.75 and entries[1].clean_exact_match == 0.75
    table = caption_markdown(entries)
    assert "decoder_gradient:targeted %" in table and "| 2 | a | mnist_captions | 0.3 | 75.0 | 75.0 |" in table


def test_caption_rows_are_checked_against_their_schema():
    with pytest.raises(RowSchemaError, match="strategy"):
        _row("a", "gan:x", "nonsense", 0.3, "10")
    with pytest.raises(RowSchemaError, match="disagrees"):
        ResultRow(kind="caption", dataset="d", model="m", attack="a", config={},
                  metrics={"n": 2, "strategy": "targeted", "success_rate": 1.0, "success_mask": "10",
                           "bleu_to_target": 0.1})
