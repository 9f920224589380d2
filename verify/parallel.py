"""Run independent jobs in worker processes (one per core), each with a hard wall-clock limit."""
from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, Callable


def _worker(fn: Callable, args: tuple, q) -> None:
    import torch

    torch.set_num_threads(1)  # one core per job: the jobs themselves are the parallelism
    try:
        q.put(("ok", fn(*args)))
    except Exception as exc:  # report, never hang the scheduler
        q.put(("error", f"{type(exc).__name__}: {exc}"))


def run_parallel(fn: Callable, jobs: list[tuple], workers: int = 2, hard_timeout: float | None = None,
                 on_result: Callable[[int, Any], None] | None = None) -> list[tuple[str, Any]]:
    """Run ``fn(*job)`` for each job in up to ``workers`` processes; returns ``(status, value)`` per job.

    status is "ok", "error" (value = message) or "killed" (the job ran past ``hard_timeout``).
    """
    ctx = mp.get_context("fork")
    results: list = [None] * len(jobs)
    pending = list(range(len(jobs)))
    running: dict[int, tuple] = {}
    while pending or running:
        while pending and len(running) < max(1, workers):
            i = pending.pop(0)
            q = ctx.Queue()
            p = ctx.Process(target=_worker, args=(fn, jobs[i], q), daemon=True)
            p.start()
            running[i] = (p, q, time.monotonic())
        time.sleep(0.02)
        for i, (p, q, t0) in list(running.items()):
            res = None
            if not q.empty():
                res = q.get()
            elif not p.is_alive():
                res = ("error", f"worker exited with code {p.exitcode}") if q.empty() else q.get()
            elif hard_timeout is not None and time.monotonic() - t0 > hard_timeout:
                p.kill()
                res = ("killed", f"killed after {hard_timeout:.0f} s")
            if res is not None:
                p.join(timeout=5)
                results[i] = res
                del running[i]
                if on_result is not None:
                    on_result(i, res)
    return results
