"""Re-run the README's main job (``rbl`` with its defaults) and compare every figure with the README's table.

The README quotes one row (digits ``standard_cnn``, Linf eps 0.1: clean, each attack, AutoAttack, worst case)
measured on weights trained on the pinned CPU kernels. This script runs the same job through the Python API
into a throwaway results store and prints README vs. now per column; it exits 1 when any figure differs at the
README's precision (two decimals), naming the column. CI runs it after the tests (the zoo cache is warm then).
Usage: python scripts/check_readme_figures.py [--readme README.md]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from robustbench_local.api import compose_config, run_task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# README column -> where the evaluation row keeps that number.
COLUMNS = {"clean": ("clean_acc",), "FGSM": ("attacks", "fgsm", "robust_acc"), "PGD-40": ("attacks", "pgd", "robust_acc"),
           "C&W L2 (projected)": ("attacks", "cw", "robust_acc"), "DeepFool": ("attacks", "deepfool", "robust_acc"),
           "HopSkipJump": ("attacks", "hopskipjump", "robust_acc"), "AutoAttack": ("autoattack_acc",),
           "worst case": ("robust_acc",)}


def readme_row(readme: Path) -> dict[str, str]:
    """The README's quoted figures: the table whose header starts ``| clean | FGSM |``, column -> "98.74"."""
    lines = readme.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\|\s*clean\s*\|\s*FGSM\s*\|", line):
            header = [c.strip() for c in line.strip("|").split("|")]
            values = [c.strip().rstrip("%").strip() for c in lines[i + 2].strip("|").split("|")]
            return dict(zip(header, values))
    raise SystemExit(f"{readme}: no table with a header starting '| clean | FGSM |'")


def measured_row() -> dict[str, str]:
    """The main job's figures now, formatted as the README formats them."""
    with tempfile.TemporaryDirectory(prefix="rbl-readme-check-") as tmp:
        cfg = compose_config(f"results.url=sqlite:///{tmp}/rows.db", f"results.state_dir={tmp}/state", "progress=false",
                             "task.print_leaderboard=false")
        (row,) = run_task(cfg)
    # Attack summaries are keyed "<name>#<config hash>"; the README names the attack.
    attacks = {key.split("#")[0]: summary for key, summary in row.metrics["attacks"].items()}
    out = {}
    for column, path in COLUMNS.items():
        value = attacks[path[1]][path[2]] if path[0] == "attacks" else row.metrics[path[0]]
        out[column] = f"{100 * value:.2f}"
    return out


def main() -> None:
    """Print README vs. now per column; exit 1 on any difference."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args()
    quoted, now = readme_row(args.readme), measured_row()
    differ = [c for c in COLUMNS if quoted.get(c) != now[c]]
    for column in COLUMNS:
        print(f"{column:>20}: README {quoted.get(column, '(missing)'):>7} %   now {now[column]:>7} %"
              f"{'   <- differs' if column in differ else ''}")
    if differ:
        sys.exit(f"check_readme_figures: {', '.join(differ)} differ from the README's table; re-measure and update "
                 "it, or find what changed the weights or the attacks' arithmetic")
    print("check_readme_figures: every figure the README quotes came out again")


if __name__ == "__main__":
    main()
