"""The leaderboard page in a real browser: Debian's chromium driven by Playwright, on a page built from a
results database that real runs filled (evaluations, a certification, a curve, a sweep with a failed job).

No browser is downloaded: the test launches ``/usr/bin/chromium`` (``$RBL_CHROMIUM`` overrides), or where that
is missing Playwright's own Chromium build (what scripts/install-test-deps.sh installs on Ubuntu). Where neither
is there the test fails and says how to install one; it never skips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustbench_local.api import compose_config, run_task
from robustbench_local.leaderboard import build_entries
from robustbench_local.leaderboard_page import build_page, gap_pp
from robustbench_local.results import ResultsStore
from robustbench_local.tasks.base import TaskContext

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("RBL_CHROMIUM", "/usr/bin/chromium"))
N = "dataset.n_test=40"


def _run(tmp: Path, *overrides: str) -> None:
    cfg = compose_config(f"results.url=sqlite:///{tmp}/r.db", f"results.state_dir={tmp}/state",
                         f"results.spool={tmp}/spool.jsonl", "progress=false", "workers=1", N, *overrides)
    run_task(cfg, TaskContext.from_config(cfg, tmp / "out"))


def fill_database(tmp: Path) -> Path:
    """A results database from real runs of two models, two norms, a verifier, a curve and a failed sweep job."""
    for overrides in (["attack=pgd", "threat.eps=0.05"], ["attack=pgd", "threat.eps=0.1"], ["attack=fgsm", "threat.eps=0.1"],
                      ["attack=pgd", "threat.norm=L2", "threat.eps=0.5"],
                      ["model=standard_mlp_tiny", "attack=pgd", "threat.eps=0.1"]):
        _run(tmp, *overrides, "task.print_leaderboard=false")
    _run(tmp, "task=certify", "model=standard_mlp_tiny", "threat.eps=0.1", "task.method=bounds", "task.workers=1")
    _run(tmp, "task=curve", "attack=deepfool", "task.epsilons=[0.0,0.05,0.1,0.2]")
    subprocess.run([sys.executable, "-m", "robustbench_local.cli", "-m", f"results.url=sqlite:///{tmp}/r.db",
                    f"hydra.sweep.dir={tmp}/multi", "progress=false", "workers=1", N, "task.print_leaderboard=false",
                    "attack=fgsm", "threat.eps=0.2,1.5"], cwd=REPO, capture_output=True, text=True)  # 1.5 fails
    return tmp / "r.db"


@pytest.fixture(scope="module")
def page(tmp_path_factory, digits_cnn) -> tuple[Path, ResultsStore]:
    """The page file and its store."""
    tmp = tmp_path_factory.mktemp("page")
    store = ResultsStore(f"sqlite:///{fill_database(tmp)}")
    path = tmp / "leaderboard.html"
    path.write_text(build_page(store, build_entries(store)), encoding="utf-8")
    return path, store


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium (or ``$RBL_CHROMIUM``), else Playwright's own Chromium build, under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        own = "RBL_CHROMIUM" not in os.environ and not CHROMIUM.exists() and Path(p.chromium.executable_path).exists()
        if not own and not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} not found: the page test needs a Chromium; scripts/install-test-deps.sh "
                        "installs one (Debian: apt-get install -y --no-install-recommends chromium)")
        b = p.chromium.launch(executable_path=None if own else str(CHROMIUM), headless=True)
        yield b
        b.close()


def _visible_ranks(tab) -> list[str]:
    return tab.eval_on_selector_all("#lb tr.entry:not([hidden])", "rs => rs.map(r => r.cells[0].textContent)")


def test_the_page_sorts_filters_and_opens_rows_as_the_database_says(page, browser):
    path, store = page
    entries = build_entries(store)
    by_rank = {str(e.rank): e for e in entries}
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.on("request", lambda req: errors.append(f"network request {req.url}") if not req.url.startswith(("file:", "data:")) else None)
    tab.goto(path.as_uri())
    assert _visible_ranks(tab) == [str(e.rank) for e in entries]

    # Sort by clean accuracy, ascending on the second click (the browser's sort is stable: ties keep rank order).
    header = tab.locator("#lb th", has_text="clean %")
    header.click()
    header.click()
    expected = sorted(entries, key=lambda e: e.clean_acc)
    assert _visible_ranks(tab) == [str(e.rank) for e in expected]

    # Filter by threat model, then by kind.
    tab.select_option("#filter-threat", "L2")
    assert _visible_ranks(tab) == [str(e.rank) for e in expected if e.threat_model == "L2"]
    tab.select_option("#filter-threat", "")
    tab.select_option("#filter-kind", "certification")
    kinds = {h: r["kind"] for r in store.rows() for h in [r["config_hash"]]}
    certified = [str(e.rank) for e in expected if any(kinds[h] == "certification" for h in e.rows)]
    assert _visible_ranks(tab) == certified and len(certified) == 1

    # The certified entry's gap is highlighted, with the number the rows give.
    (entry,) = [by_rank[r] for r in certified]
    assert gap_pp(entry) > 0   # at eps 0.1 the bounds prove fewer points than PGD fails to break
    gap = tab.locator("#lb tr.entry:not([hidden]) td.gap")
    assert gap.count() == 1 and gap.text_content() == f"{gap_pp(entry):.2f}"

    # Open the row: its details show each merged row's config, versions and per-attack numbers.
    tab.select_option("#filter-kind", "")
    pgd = next(e for e in entries if e.model == "standard_cnn" and e.eps == 0.1 and e.threat_model == "Linf")
    row = tab.locator("#lb tr.entry").nth([str(e.rank) for e in expected].index(str(pgd.rank)))
    details = row.locator("xpath=following-sibling::tr[1]")
    assert details.is_hidden()
    row.click()
    assert details.is_visible()
    for key in pgd.rows:
        (db_row,) = store.rows(config_hash=key)
        block = details.locator(f'.row-detail[data-hash="{key}"]')
        assert json.loads(block.locator("pre.config").text_content()) == db_row["config"]
        assert json.loads(block.locator("pre.versions").text_content()) == db_row["versions"]
        for attack_key, summary in db_row["metrics"]["attacks"].items():
            cells = block.locator(f'tr.attack[data-key="{attack_key}"] td').all_text_contents()
            assert cells[:3] == [summary["name"], attack_key, f"{100 * summary['robust_acc']:.2f}"]
    assert sorted(details.locator(".row-detail").evaluate_all("bs => bs.map(b => b.dataset.hash)")) == sorted(pgd.rows)
    # The model's curves: the embedded image loads, and the points are the curve row's.
    curve = details.locator("img.curve")
    assert curve.evaluate("img => img.complete && img.naturalWidth > 0")
    (curve_row,) = store.rows(kind="curve")
    points = details.locator("table.curve-points tr").all_text_contents()
    for eps, acc in zip(curve_row["metrics"]["epsilons"], curve_row["metrics"]["robust_acc"]):
        assert any(p.startswith(f"deepfoolattack run{eps:g}") and p.endswith(f"{100 * acc:.2f}") for p in points), points
    row.click()
    assert details.is_hidden()

    # The failed sweep job is listed with its error, and counts nowhere in the table.
    (failed,) = store.rows(kind="job", status="failed")
    jobs = tab.locator("#jobs li.job.failed").all_text_contents()
    assert len(jobs) == 1 and failed["metrics"]["error"] in jobs[0] and "threat.eps=1.5" in jobs[0]
    assert not any(e.eps == 1.5 for e in entries)
    assert errors == []
    tab.close()
