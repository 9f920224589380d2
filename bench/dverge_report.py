"""Print the DVERGE comparison (baseline vs DVERGE ensembles) from the results database.

Reads kind="ensemble" rows (task=dverge_eval: transfer accuracy per eps, transferability matrix) and
kind="evasion" rows (task=evaluate: white-box PGD / AutoAttack) for the DVERGE zoo models.

    python bench/dverge_report.py --url sqlite:///results/rbl.db
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from robustbench_local.results import ResultsStore

MODELS = ("baseline_ens3_cnn", "dverge_ens3_cnn", "dverge_plus_ens3_cnn", "baseline_ens5_cnn", "dverge_ens5_cnn")


def _fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{100 * v:5.1f}"


def main() -> None:
    """Print one table per data set and the transferability matrices."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="sqlite:///results/rbl.db")
    args = ap.parse_args()
    store = ResultsStore(args.url)
    rows = [r for r in store.rows() if r["model"] in MODELS]
    for ds in sorted({r["dataset"] for r in rows}):
        transfer, white, mats, clean = defaultdict(dict), defaultdict(dict), {}, {}
        for r in rows:
            if r["dataset"] != ds:
                continue
            m = r["metrics"]
            if r["kind"] == "ensemble" and r["attack"].startswith("transfer:"):
                transfer[r["model"]][r["eps"]] = m["transfer_acc"]
                clean[r["model"]] = m["clean_acc"]
            elif r["kind"] == "ensemble" and r["attack"] == "transferability_pgd":
                mats[r["model"]] = (r["eps"], m["matrix"], m["mean_off_diagonal"], m["n"])
            elif r["kind"] == "evasion":
                white[r["model"]][(r["attack"], r["eps"])] = m["robust_acc"]
                clean.setdefault(r["model"], m["clean_acc"])
        t_eps = sorted({e for d in transfer.values() for e in d})
        w_keys = sorted({k for d in white.values() for k in d}, key=lambda k: (k[0], k[1]))
        print(f"\n== {ds}: accuracy in % (transfer: robust to every attack from the surrogate ensembles)")
        head = ["model".ljust(22), "clean"] + [f"tr@{e:g}" for e in t_eps] + [f"{a}@{e:g}" for a, e in w_keys]
        print("  ".join(h.rjust(5) for h in head))
        for model in MODELS:
            if model not in clean:
                continue
            cells = [model.ljust(22), _fmt(clean[model])] + [_fmt(transfer[model].get(e)) for e in t_eps]
            cells += [_fmt(white[model].get(k)).rjust(len(f"{k[0]}@{k[1]:g}")) for k in w_keys]
            print("  ".join(c.rjust(5) for c in cells))
        for model in MODELS:
            if model in mats:
                eps, mat, off, n = mats[model]
                print(f"-- {ds} {model}: transferability (PGD eps={eps:g}, n={n}), mean off-diagonal {off:.3f}")
                for row in mat:
                    print("   " + " ".join(f"{v:.2f}" for v in row))
    store.close()


if __name__ == "__main__":
    main()
