"""verify vs Marabou on ACAS Xu: same instances, same per-instance timeout, one run, side by side.

Default instances: properties 1-4 on 10 networks (the ones of
``shared/benchmarks/measurements/acasxu_mnistfc_cpu60.csv``) plus properties 5-10 on their
VNN-COMP networks. Each (instance, engine) job runs in its own process with one thread;
``--workers`` jobs run at a time (2 = both cores). Prints solved counts, wrong answers
(against ``expected.csv``; must be 0), total time and the time ratio. Every counterexample
is re-checked with onnxruntime.

    python bench/verify_vs_marabou.py                      # the full comparison (long)
    python bench/verify_vs_marabou.py --networks 1_1,2_7 --props 1,2 --timeout 20
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from verify.parallel import run_parallel  # noqa: E402

BENCH = REPO.parent / "shared" / "benchmarks" / "acasxu"
NETWORKS = ["1_1", "1_5", "1_9", "2_3", "2_7", "3_3", "3_7", "4_2", "4_9", "5_3"]
EXTRA = [("1_1", 5), ("1_1", 6), ("1_9", 7), ("2_9", 8), ("3_3", 9), ("4_5", 10)]


def _job(engine: str, net_id: str, prop_id: int, timeout: float) -> dict:
    import numpy as np

    from verify.marabou_baseline import marabou_solve
    from verify.vnncomp_runner import onnxruntime_output, solve_instance
    from verify.vnnlib import load_vnnlib

    onnx = BENCH / "onnx" / f"ACASXU_run2a_{net_id}_batch_2000.onnx"
    vnn = BENCH / "vnnlib" / f"prop_{prop_id}.vnnlib"
    t0 = time.monotonic()
    if engine == "ours":
        r = solve_instance(str(onnx), str(vnn), timeout)
        status, x = r["status"], (np.array(r["x"]) if "x" in r else None)
        reason = r.get("reason", "")
    else:
        r = marabou_solve(onnx, load_vnnlib(vnn), timeout)
        status, x, reason = r["status"], r["x"], r["reason"]
    wall = time.monotonic() - t0
    cex_ok = ""
    if x is not None:
        y = onnxruntime_output(onnx, x)
        cex_ok = bool(load_vnnlib(vnn).is_counterexample(x, y, tol=1e-4))
    return {"engine": engine, "network": net_id, "property": prop_id, "status": status, "time_s": wall,
            "cex_onnxruntime_ok": cex_ok, "reason": reason}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--props", default="1,2,3,4")
    ap.add_argument("--no-extra", action="store_true", help="skip properties 5-10")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="ours,marabou")
    ap.add_argument("--out", default=None, help="CSV of per-instance results")
    a = ap.parse_args()
    expected = {(r["network"].split("run2a_")[1].split("_batch")[0], int(r["property"].split("_")[1])): r["expected"]
                for r in csv.DictReader(open(BENCH / "expected.csv"))}
    inst = [(n, int(p)) for n in a.networks.split(",") for p in a.props.split(",")]
    if not a.no_extra:
        inst += EXTRA
    engines = a.engines.split(",")
    jobs = [(e, n, p, a.timeout) for n, p in inst for e in engines]
    print(f"{len(inst)} instances x {engines}, timeout {a.timeout:.0f} s, {a.workers} workers", flush=True)

    def show(i, res):
        st, val = res
        if st == "ok":
            print(f"  {val['engine']:8s} {val['network']} prop_{val['property']}: {val['status']:9s} "
                  f"{val['time_s']:7.2f} s  (expected {expected[(val['network'], val['property'])]}) {val['reason']}",
                  flush=True)

    raw = run_parallel(_job, jobs, workers=a.workers, hard_timeout=a.timeout + 60, on_result=show)
    rows = []
    for job, (st, val) in zip(jobs, raw):
        if st != "ok":
            val = {"engine": job[0], "network": job[1], "property": job[2], "status": "unknown",
                   "time_s": a.timeout, "cex_onnxruntime_ok": "", "reason": str(val)}
        val["expected"] = expected[(val["network"], val["property"])]
        rows.append(val)
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    print()
    print(f"{'instance':18s}" + "".join(f"{e:>22s}" for e in engines) + "   expected")
    for n, p in inst:
        cells = []
        for e in engines:
            r = next(r for r in rows if r["engine"] == e and r["network"] == n and r["property"] == p)
            cells.append(f"{r['status']:>10s} {r['time_s']:8.2f} s  ")
        print(f"{n + ' prop_' + str(p):18s}" + "".join(f"{c:>22s}" for c in cells) + f"   {expected[(n, p)]}")
    print()
    summary = {}
    for subset, keep in (("props 1-4", lambda r: r["property"] <= 4), ("all", lambda r: True)):
        for e in engines:
            rs = [r for r in rows if r["engine"] == e and keep(r)]
            solved = [r for r in rs if r["status"] in ("holds", "violated")]
            wrong = [r for r in solved if r["status"] != r["expected"]]
            bad_cex = [r for r in rs if r["cex_onnxruntime_ok"] is False]
            total = sum(min(r["time_s"], a.timeout) for r in rs)
            summary[(subset, e)] = total
            print(f"{subset:10s} {e:8s} solved {len(solved):3d}/{len(rs):3d}  wrong {len(wrong)}  "
                  f"bad counterexamples {len(bad_cex)}  total time {total:8.1f} s")
        if "ours" in engines and "marabou" in engines and summary[(subset, "marabou")] > 0:
            print(f"{subset:10s} time ratio ours/marabou = {summary[(subset, 'ours')] / summary[(subset, 'marabou')]:.3f}")


if __name__ == "__main__":
    main()
