"""VNN-COMP style runner: one ONNX + VNN-LIB pair, or a CSV of instances, with a timeout each.

Writes VNN-COMP result files: the first line is ``sat``, ``unsat``, ``timeout`` or ``unknown``;
a ``sat`` file continues with the counterexample as ``((X_0 v) (X_1 v) ... (Y_0 v) ...)``.

    python -m verify.vnncomp_runner NET.onnx PROP.vnnlib --timeout 60 --out result.txt
    python -m verify.vnncomp_runner --csv instances.csv [--root DIR] --out-dir results/ --workers 2
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from rbl_core.onnx import OnnxGraph, load_onnx

from .graph.verifier import verify_graph
from .graph_ibp import proves
from .network import UnsupportedOperationError
from .step_import import graph_to_network
from .parallel import run_parallel
from .verdict import Verdict
from .verifier import verify
from .vnnlib import load_vnnlib


def onnxruntime_output(onnx_path: str | Path, x: np.ndarray) -> np.ndarray | None:
    """The ONNX model's output at ``x`` computed by onnxruntime (None if it is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    return np.asarray(sess.run(None, {inp.name: np.asarray(x, dtype=np.float32).reshape(shape)})[0]).reshape(-1)


def _interval_only(graph: OnnxGraph, prop, refusal: Exception, t0: float) -> dict:
    """A network the dense IR cannot hold: the graph's interval bounds prove the property, or it stays unknown."""
    held = proves(graph, prop)
    return {"onnx": graph.source, "result": "unsat" if held else "unknown", "status": "holds" if held else "unknown",
            "time_s": time.monotonic() - t0, "engine": "graph_ibp", "stats": {},
            "reason": "" if held else f"interval bounds too loose; dense IR refused: {refusal}"}


def _graph_verdict(graph: OnnxGraph, prop, deadline: float, seed: int) -> Verdict | None:
    """A convolutional network's verdict from the graph bounds (falsify, CROWN, alpha-CROWN); None for the others.

    Convolutions stay convolutions there (the dense IR would turn each into a matrix); fully connected networks
    keep the dense path, whose branch and bound decides far more of them.
    """
    if not any(step.op == "Conv" for step in graph.steps):
        return None
    try:
        return verify_graph(graph, prop, tuple(graph.sample_shape), timeout=max(0.1, deadline - time.monotonic()),
                            seed=seed)
    except UnsupportedOperationError:
        return None   # an op the graph bounds do not encode: the dense IR, or interval bounds, take it


def solve_instance(onnx_path: str, vnnlib_path: str, timeout: float, seed: int = 0) -> dict:
    """Verify one instance in this process; returns a JSON-friendly dict."""
    t0 = time.monotonic()
    prop = load_vnnlib(vnnlib_path)
    graph = load_onnx(onnx_path)   # read once: the graph bounds, the dense IR and the interval bounds share it
    v = _graph_verdict(graph, prop, t0 + timeout, seed)
    if v is None:
        try:
            net = graph_to_network(graph)
        except UnsupportedOperationError as refusal:
            return {**_interval_only(graph, prop, refusal, t0), "onnx": str(onnx_path), "vnnlib": str(vnnlib_path)}
        v = verify(net, prop, timeout=max(0.1, timeout - (time.monotonic() - t0)), seed=seed)
    out = {"onnx": str(onnx_path), "vnnlib": str(vnnlib_path), "result": v.vnncomp, "status": v.status,
           "time_s": time.monotonic() - t0, "reason": v.reason, "engine": v.engine, "stats": v.stats}
    if v.counterexample is not None:
        out["x"] = v.counterexample.tolist()
        out["y"] = v.output.tolist()
        y_ort = onnxruntime_output(onnx_path, v.counterexample)
        if y_ort is not None:
            # onnxruntime runs in float32; the property must still be violated there (tiny tolerance)
            out["onnxruntime_ok"] = bool(prop.is_counterexample(v.counterexample, y_ort, tol=1e-5))
            if not out["onnxruntime_ok"]:   # a counterexample only our forward pass believes is not reported
                out.update(result="unknown", status="unknown",
                           reason="counterexample not confirmed by onnxruntime (float32 rounding at the boundary)")
    return out


def format_result(res: dict) -> str:
    """The VNN-COMP result-file text for one instance."""
    lines = [res["result"]]
    if res["result"] == "sat":
        body = [f"(X_{i} {v!r})" for i, v in enumerate(res["x"])] + [f"(Y_{j} {v!r})" for j, v in enumerate(res["y"])]
        lines.append("(" + "\n ".join(body) + ")")
    return "\n".join(lines) + "\n"


def run_csv(csv_path: str | Path, out_dir: str | Path, root: str | Path | None = None, workers: int = 2,
            timeout_override: float | None = None, limit: int | None = None) -> list[dict]:
    """Run every ``onnx,vnnlib,timeout`` row of a VNN-COMP instances CSV in parallel."""
    csv_path = Path(csv_path)
    root = Path(root) if root else csv_path.parent
    rows = [r for r in csv.reader(open(csv_path)) if r and not r[0].startswith("#")]
    if limit:
        rows = rows[:limit]
    jobs = []
    for i, r in enumerate(rows):
        if len(r) < 2:
            raise ValueError(f"{csv_path}:{i + 1}: expected 'onnx,vnnlib,timeout', got {r}")
        t = float(timeout_override if timeout_override is not None else (r[2] if len(r) > 2 else 60))
        jobs.append((str(root / r[0]), str(root / r[1]), t))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = [None] * len(jobs)  # type: ignore[list-item]

    def done(i: int, res) -> None:
        status, val = res
        onnx, vnn, t = jobs[i]
        if status != "ok":
            val = {"onnx": onnx, "vnnlib": vnn, "result": "timeout" if status == "killed" else "unknown",
                   "status": "unknown", "time_s": t, "reason": str(val)}
        results[i] = val
        name = f"{Path(onnx).stem}__{Path(vnn).stem}.txt"
        (out_dir / name).write_text(format_result(val))
        print(f"{Path(onnx).stem} {Path(vnn).stem}: {val['result']} ({val['time_s']:.2f} s)", flush=True)

    run_parallel(solve_instance, jobs, workers=workers, hard_timeout=max(j[2] for j in jobs) + 30, on_result=done)
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["onnx", "vnnlib", "result", "time_s"])
        for r in results:
            w.writerow([r["onnx"], r["vnnlib"], r["result"], f"{r['time_s']:.3f}"])
    return results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", nargs="?")
    ap.add_argument("vnnlib", nargs="?")
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--out", default=None, help="result file for a single instance")
    ap.add_argument("--csv", default=None, help="instances CSV (onnx,vnnlib,timeout)")
    ap.add_argument("--root", default=None, help="directory the CSV paths are relative to")
    ap.add_argument("--out-dir", default="vnncomp_results")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)
    if a.csv:
        run_csv(a.csv, a.out_dir, a.root, a.workers, a.timeout, a.limit)
        return
    if not (a.onnx and a.vnnlib):
        ap.error("give ONNX and VNN-LIB files, or --csv")
    import torch

    torch.set_num_threads(1)
    res = solve_instance(a.onnx, a.vnnlib, a.timeout or 60.0)
    text = format_result(res)
    if a.out:
        Path(a.out).write_text(text)
    print(text, end="")
    print(json.dumps({k: v for k, v in res.items() if k not in ("x", "y")}))


if __name__ == "__main__":
    main()
