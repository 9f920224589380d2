"""verify vs Marabou on ACAS Xu (and on MNIST FC networks): same instances, same timeout, one run.

Default instances: properties 1-4 on 10 networks (the ones of
``shared/benchmarks/measurements/acasxu_mnistfc_cpu60.csv``) plus properties 5-10 on their
VNN-COMP networks. ``--all``: the 186 instances of ``acasxu/instances.csv`` at their own
timeout (116 s). ``--only 1_8:2,4_2:2``: those instances. ``--mnist DIR``: the instances of
``DIR/instances.csv`` written by ``bench/mnist_fc.py`` (no expected answers: "wrong" there
counts disagreements between solved answers of the engines). Each (instance, engine) job runs
in its own process with one thread; ``--workers`` jobs run at a time (2 = both cores).
Prints progress (instances done, solved so far), then per engine solved (answers within the timeout), wrong answers
(against ``expected.csv``; must be 0), median and total time, and the time ratio. Every
counterexample is re-checked with onnxruntime.

    python bench/verify_vs_marabou.py                      # the default comparison (long)
    python bench/verify_vs_marabou.py --networks 1_1,2_7 --props 1,2 --timeout 20
    python bench/verify_vs_marabou.py --all                # 186 x 2 engines at 116 s (hours)
    python bench/verify_vs_marabou.py --only 1_8:2,3_3:2 --engines ours --timeout 116
    python bench/verify_vs_marabou.py --mnist /tmp/mnist_fc --timeout 60
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from verify.parallel import run_parallel  # noqa: E402

BENCH = REPO.parent / "shared" / "benchmarks" / "acasxu"
NETWORKS = ["1_1", "1_5", "1_9", "2_3", "2_7", "3_3", "3_7", "4_2", "4_9", "5_3"]
EXTRA = [("1_1", 5), ("1_1", 6), ("1_9", 7), ("2_9", 8), ("3_3", 9), ("4_5", 10)]


def _job(engine: str, key: str, onnx: str, vnn: str, timeout: float) -> dict:
    import numpy as np

    from verify.marabou_baseline import marabou_solve
    from verify.vnncomp_runner import onnxruntime_output, solve_instance
    from verify.vnnlib import load_vnnlib

    t0 = time.monotonic()
    if engine == "ours":
        r = solve_instance(onnx, vnn, timeout)
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
    return {"engine": engine, "instance": key, "status": status, "time_s": wall, "cex_onnxruntime_ok": cex_ok,
            "reason": reason}


def _acas_instances(a) -> list[tuple]:
    """(key, onnx, vnnlib, timeout, expected) for the chosen ACAS Xu instances."""
    expected = {(r["network"].split("run2a_")[1].split("_batch")[0], int(r["property"].split("_")[1])): r["expected"]
                for r in csv.DictReader(open(BENCH / "expected.csv"))}

    def one(n: str, p: int, t: float) -> tuple:
        return (f"{n} prop_{p}", str(BENCH / "onnx" / f"ACASXU_run2a_{n}_batch_2000.onnx"),
                str(BENCH / "vnnlib" / f"prop_{p}.vnnlib"), t, expected[(n, p)])

    if a.all:
        out = []
        for r in csv.reader(open(BENCH / "instances.csv")):
            n = r[0].split("run2a_")[1].split("_batch")[0]
            p = int(Path(r[1]).stem.split("_")[1])
            out.append(one(n, p, a.timeout if a.timeout_set else float(r[2])))
        return out
    if a.only:
        return [one(x.split(":")[0], int(x.split(":")[1]), a.timeout) for x in a.only.split(",")]
    inst = [(n, int(p)) for n in a.networks.split(",") for p in a.props.split(",")]
    if not a.no_extra:
        inst += EXTRA
    return [one(n, p, a.timeout) for n, p in inst]


def _mnist_instances(root: Path, a) -> list[tuple]:
    """(key, onnx, vnnlib, timeout, None) from an instances.csv of bench/mnist_fc.py."""
    path = root / "instances.csv"
    if not path.exists():
        raise SystemExit(f"--mnist: {path} not found; write it with bench/mnist_fc.py --out-dir {root}")
    rows = list(csv.reader(open(path)))
    if a.only:
        keep = set(a.only.split(","))
        rows = [r for r in rows if Path(r[1]).stem in keep]
    return [(Path(r[1]).stem, str(root / r[0]), str(root / r[1]), a.timeout, None) for r in rows]


def _summary(rows: list[dict], engines: list[str], label: str) -> None:
    """Solved / wrong / median / total per engine and the time ratio."""
    totals = {}
    by_inst: dict = {}
    for r in rows:
        by_inst.setdefault(r["instance"], {})[r["engine"]] = r
    for e in engines:
        rs = [r for r in rows if r["engine"] == e]
        solved = [r for r in rs if r["status"] in ("holds", "violated")]
        if any(r["expected"] for r in rs):
            wrong = [r for r in solved if r["status"] != r["expected"]]
        else:  # no reference answers: a solved answer that another engine contradicts
            wrong = [r for r in solved if any(o["status"] in ("holds", "violated") and o["status"] != r["status"]
                                              for o in by_inst[r["instance"]].values())]
        bad_cex = [r for r in rs if r["cex_onnxruntime_ok"] is False]
        total = sum(min(r["time_s"], r["timeout"]) for r in rs)
        # as in VNN-COMP, an answer after the timeout does not count as solved (it is still checked for wrongness)
        in_time = [r for r in solved if r["time_s"] <= r["timeout"]]
        late = f"  ({len(solved) - len(in_time)} more after the timeout)" if len(in_time) < len(solved) else ""
        med = statistics.median([r["time_s"] for r in in_time]) if in_time else float("nan")
        totals[e] = total
        print(f"{label:10s} {e:8s} solved {len(in_time):3d}/{len(rs):3d}  wrong {len(wrong)}  "
              f"bad counterexamples {len(bad_cex)}  median {med:7.2f} s  total time {total:8.1f} s{late}", flush=True)
    if "ours" in engines and "marabou" in engines and totals["marabou"] > 0:
        print(f"{label:10s} time ratio ours/marabou = {totals['ours'] / totals['marabou']:.3f}")


def main() -> None:
    """Run the comparison and print the table and summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--props", default="1,2,3,4")
    ap.add_argument("--no-extra", action="store_true", help="skip properties 5-10")
    ap.add_argument("--all", action="store_true", help="all 186 instances of acasxu/instances.csv (116 s each)")
    ap.add_argument("--only", default="", help="ACAS Xu NET:PROP list (e.g. 1_8:2,4_2:2) or MNIST vnnlib stems")
    ap.add_argument("--mnist", default="", help="directory written by bench/mnist_fc.py")
    ap.add_argument("--timeout", type=float, default=None, help="per instance (default 60; --all: the CSV's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="ours,marabou")
    ap.add_argument("--out", default=None, help="CSV of per-instance results")
    a = ap.parse_args()
    a.timeout_set = a.timeout is not None
    a.timeout = 60.0 if a.timeout is None else a.timeout
    inst = _mnist_instances(Path(a.mnist), a) if a.mnist else _acas_instances(a)
    engines = a.engines.split(",")
    jobs = [(e, key, onnx, vnn, t) for key, onnx, vnn, t, _ in inst for e in engines]
    meta = {key: (t, exp) for key, _, _, t, exp in inst}
    print(f"{len(inst)} instances x {engines}, {a.workers} workers", flush=True)
    solved_so_far = {e: 0 for e in engines}
    n_done = [0]

    def show(i, res):
        st, val = res
        n_done[0] += 1
        e = jobs[i][0]
        if st == "ok":
            solved_so_far[e] += val["status"] in ("holds", "violated")
            exp = meta[val["instance"]][1]
            print(f"  {e:8s} {val['instance']:24s}: {val['status']:9s} {val['time_s']:7.2f} s"
                  + (f"  (expected {exp})" if exp else "") + f" {val['reason'][:80]}", flush=True)
        if n_done[0] % max(1, len(engines)) == 0 or n_done[0] == len(jobs):
            print(f"[{n_done[0]}/{len(jobs)} jobs] solved so far: "
                  + ", ".join(f"{k} {v}" for k, v in solved_so_far.items()), flush=True)

    raw = run_parallel(_job, jobs, workers=a.workers, hard_timeout=max(t for *_, t, _ in inst) + 60, on_result=show)
    rows = []
    for job, (st, val) in zip(jobs, raw):
        if st != "ok":
            val = {"engine": job[0], "instance": job[1], "status": "unknown", "time_s": job[4],
                   "cex_onnxruntime_ok": "", "reason": str(val)}
        val["timeout"], val["expected"] = meta[val["instance"]]
        rows.append(val)
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    print()
    print(f"{'instance':26s}" + "".join(f"{e:>22s}" for e in engines) + "   expected")
    for key, *_rest, exp in inst:
        cells = []
        for e in engines:
            r = next(r for r in rows if r["engine"] == e and r["instance"] == key)
            cells.append(f"{r['status']:>10s} {r['time_s']:8.2f} s  ")
        print(f"{key:26s}" + "".join(f"{c:>22s}" for c in cells) + f"   {exp or '-'}")
    print()
    if not a.mnist and not a.all and not a.only:
        prop = {key: int(key.split("prop_")[1]) for key, *_ in inst}
        _summary([r for r in rows if prop[r["instance"]] <= 4], engines, "props 1-4")
    _summary(rows, engines, "all")


if __name__ == "__main__":
    main()
