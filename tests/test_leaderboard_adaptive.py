"""Leaderboard of preprocessing defenses: no headline without an adaptive attack; transferred results have their own columns."""
from __future__ import annotations

import pytest

from robustbench_local.leaderboard import build_entries, to_markdown
from robustbench_local.results import ResultsStore, RowSchemaError
from result_rows import evasion_row  # tests/ is on sys.path (pytest rootdir import mode)


def test_headline_needs_an_adaptive_attack_and_unaware_results_have_their_own_column(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path}/lb.db")
    store.record(evasion_row("m", {"pgd#1": "1110"}, defense="raw_isp", adaptive="unaware"))
    store.record(evasion_row("m", {"pgd#1": "1000"}, defense="raw_isp", adaptive="e2e"))
    store.record(evasion_row("m", {"pgd#1": "1100"}, defense="jpeg", adaptive="unaware"))
    # BPDA is an approximation: here the transferred attack breaks an example the adaptive one did not.
    store.record(evasion_row("m", {"pgd#1": "1010"}, defense="bit_depth", adaptive="unaware"))
    store.record(evasion_row("m", {"pgd#1": "1100"}, defense="bit_depth", adaptive="bpda"))
    entries = {e.defense: e for e in build_entries(store)}
    raw = entries["raw_isp"]
    assert raw.robust_acc == 0.25 and raw.unaware_acc == 0.75 and raw.attack_mode == "e2e"
    assert raw.per_attack == {"pgd unaware": 0.75, "pgd": 0.25}
    jpeg = entries["jpeg"]   # only transferred attacks: no robustness is claimed
    assert jpeg.robust_acc is None and jpeg.unaware_acc == 0.5
    assert any("defense-unaware attacks only" in f for f in jpeg.flags)
    bits = entries["bit_depth"]   # the headline is the worst case over every attack once an adaptive one ran
    assert bits.robust_acc == 0.25 and bits.per_attack == {"pgd unaware": 0.5, "pgd": 0.5} and bits.attack_mode == "bpda"
    md = to_markdown(list(entries.values()))
    assert "attack mode" in md.splitlines()[0] and "unaware robust %" in md.splitlines()[0]


def test_an_unknown_adaptive_mode_is_refused():
    with pytest.raises(RowSchemaError, match="metrics.adaptive"):
        evasion_row("m", {"pgd#1": "1110"}, adaptive="guess")
