"""Robustness evaluation: clean accuracy, each attack, and the per-example worst case, resumable per batch."""
from __future__ import annotations

import json
import multiprocessing
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from attacks.base import EvasionAttack
from rbl_core.data import AnySplit, stream_batches
from rbl_core.device import module_device
from rbl_core.io import atomic_write_text
from rbl_core.remeasure import remeasure
from rbl_core.sanity import check_classifier
from rbl_core.threat import ThreatModel
from rbl_core.training import predict
from robustbench_local.results.kinds import encode_mask


@dataclass
class AttackOutcome:
    """Per-example results of one attack over the whole evaluated set."""

    robust: list[bool]
    distance: list[float | None]  # perturbation size of each successful, re-checked adversarial example
    queries: list[int | None]
    time_s: float = 0.0
    rejected: int = 0  # attack outputs that left the threat model or were not finite
    oom_retries: int = 0  # batches halved after CUDA ran out of memory (nothing is skipped)
    done_batches: list[int] = field(default_factory=list)

    @property
    def robust_acc(self) -> float:
        """Share of examples that stay correctly classified under this attack."""
        return sum(self.robust) / max(len(self.robust), 1)

    def summary(self, name: str) -> dict:
        """Metrics for the results row."""
        dists = sorted(d for d in self.distance if d is not None)
        queries = sorted(q for q in self.queries if q is not None)
        return {"name": name, "robust_acc": self.robust_acc, "mean_distance": sum(dists) / len(dists) if dists else None,
                "median_distance": dists[len(dists) // 2] if dists else None,
                "median_queries": queries[len(queries) // 2] if queries else None,
                "time_s": self.time_s, "rejected": self.rejected}


@dataclass
class EvaluationReport:
    """Clean accuracy, each attack's outcome, and the worst case across attacks."""

    clean: list[bool]
    attacks: dict[str, AttackOutcome]

    @property
    def clean_acc(self) -> float:
        """Top-1 accuracy on the clean inputs."""
        return sum(self.clean) / max(len(self.clean), 1)

    @property
    def worst_case(self) -> list[bool]:
        """Robust only if clean-correct and every attack failed on the example."""
        flags = list(self.clean)
        for outcome in self.attacks.values():
            flags = [a and b for a, b in zip(flags, outcome.robust)]
        return flags

    def metrics(self, keys: Mapping[str, str] | None = None) -> dict:
        """All numbers of the report in the ``evasion`` schema; ``keys`` maps attack names to their config keys."""
        keys = keys or {name: name for name in self.attacks}
        worst = self.worst_case
        return {"n": len(self.clean), "clean_acc": self.clean_acc,
                "robust_acc": sum(worst) / max(len(worst), 1),
                "attacks": {keys[name]: o.summary(name) for name, o in self.attacks.items()},
                "attack_time_s": sum(o.time_s for o in self.attacks.values()),
                "masks": {keys[name]: encode_mask(o.robust) for name, o in self.attacks.items()},
                "clean_mask": encode_mask(self.clean),
                "oom_retries": sum(o.oom_retries for o in self.attacks.values())}


class _State:
    """Per-batch evaluation state in a JSON file, written atomically after every batch."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path, self.key = path, key
        self.data: dict = {"key": key, "attacks": {}}
        if path is not None and path.exists():
            loaded = json.loads(path.read_text())
            if loaded.get("key") == key:
                self.data = loaded

    def outcome(self, name: str, n: int) -> AttackOutcome:
        raw = self.data["attacks"].get(name)
        if raw is None:
            return AttackOutcome([True] * n, [None] * n, [None] * n)
        return AttackOutcome(**raw)

    def save(self, name: str, outcome: AttackOutcome) -> None:
        self.data["attacks"][name] = outcome.__dict__
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.data))


@dataclass
class _BatchResult:
    """One attack's verdicts on one batch, re-measured by the harness."""

    indices: list[int]
    robust: list[bool]
    distance: list[float | None]
    queries: list[int | None]
    rejected: int
    time_s: float
    oom_retries: int = 0


def _attack_halving(model: nn.Module, attack: EvasionAttack, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The attack's candidates and queries on (x, y), the batch halved on CUDA out-of-memory; and how often it was."""
    # Seeded per (attack, batch) so a resumed or parallel run reproduces the sequential one; each half
    # again, so the numbers do not depend on how far a failed attempt got.
    torch.manual_seed(seed)
    try:
        result = attack(model, x, y, threat)
        return result.x_adv, result.queries, 0
    except torch.cuda.OutOfMemoryError:
        if len(x) == 1:
            raise
    # Outside the except block, so the failed attempt's tensors (held by its traceback) are freed first.
    torch.cuda.empty_cache()
    half = (len(x) + 1) // 2
    parts = [_attack_halving(model, attack, x[part], y[part], threat, seed)
             for part in (slice(None, half), slice(half, None))]
    queries = None if any(q is None for _, q, _ in parts) else torch.cat([q for _, q, _ in parts])
    return torch.cat([x_adv for x_adv, _, _ in parts]), queries, 1 + sum(n for _, _, n in parts)


def _attack_batch(model: nn.Module, attack: EvasionAttack, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                  indices: list[int], seed: int) -> _BatchResult:
    start = time.perf_counter()
    x_adv, queries, oom_retries = _attack_halving(model, attack, x, y, threat, seed)
    elapsed = time.perf_counter() - start
    checked = remeasure(model, x, y, x_adv, threat)
    # Back on the host in one copy each: the verdicts are stored as Python values.
    success, distance = checked.success.cpu(), checked.distance.cpu()
    counts = queries.cpu().tolist() if queries is not None else [None] * len(indices)
    return _BatchResult(indices, [not bool(s) for s in success],
                        [float(d) if s else None for d, s in zip(distance, success)], counts,
                        checked.rejected, elapsed, oom_retries)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _apply(outcome: AttackOutcome, batch: int, result: _BatchResult) -> None:
    for j, i in enumerate(result.indices):
        outcome.robust[i] = result.robust[j]
        outcome.distance[i] = result.distance[j]
        outcome.queries[i] = result.queries[j]
    outcome.rejected += result.rejected
    outcome.oom_retries += result.oom_retries
    outcome.time_s += result.time_s
    outcome.done_batches.append(batch)


def evaluate(model: nn.Module, data: AnySplit, attacks: Mapping[str, EvasionAttack], threat: ThreatModel, *,
             batch_size: int = 500, seed: int = 0, state_path: Path | None = None, state_key: str = "",
             progress: bool = True, workers: int = 1) -> EvaluationReport:
    """Run every attack on the clean-correct points of ``data``; resumes from ``state_path`` if present.

    The data is read one batch at a time (a :class:`StreamedSplit` never holds the whole set), and each batch
    goes to the model's device, meets every attack, and is dropped. With ``workers > 1`` on the CPU, batches
    run in that many spawned processes (one torch thread each), a few batches ahead at most. The numbers do
    not depend on the order or the workers, because every (attack, batch) is seeded on its own.
    """
    device = module_device(model)
    first = data.images(range(min(len(data), 32)))
    check_classifier(model, first, data.num_classes)
    for attack in attacks.values():   # before any work: a later attack's bad input would fail only after the earlier ones ran
        attack.check_inputs(first[:1], data.y[:1])
    state = _State(state_path, state_key)
    outcomes = {name: state.outcome(name, len(data)) for name in attacks}
    n_batches = -(-len(data) // batch_size)
    clean = [False] * len(data)
    todo = sum(n_batches - len(o.done_batches) for o in outcomes.values())
    bar = tqdm(total=todo, desc="attacks", disable=None if progress and todo else True, leave=False)
    pool = None
    # One GPU serves one process best; worker processes are for spreading CPU work.
    if workers > 1 and n_batches > 1 and device.type == "cpu":
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(1,))
    jobs: dict[Future, tuple[str, int]] = {}

    def record(name: str, b: int, result: _BatchResult) -> None:
        # Saved as each batch lands, so an interruption loses at most the batches still running.
        _apply(outcomes[name], b, result)
        state.save(name, outcomes[name])
        bar.update()

    def land(done: set[Future]) -> None:
        for future in done:
            record(*jobs.pop(future), future.result())

    try:
        for b, (span, x) in enumerate(stream_batches(data, batch_size)):
            y = data.y[span.start:span.stop]
            correct = (predict(model, x, batch_size) == y).tolist()
            clean[span.start:span.stop] = correct
            idx = [i for i, ok in zip(span, correct) if ok]
            local = torch.tensor([i - span.start for i in idx], dtype=torch.long)
            for name, attack in attacks.items():
                outcome = outcomes[name]
                if b in outcome.done_batches:
                    continue
                for i, ok in zip(span, correct):
                    if not ok:
                        outcome.robust[i] = False
                if not idx:
                    record(name, b, _BatchResult([], [], [], [], 0, 0.0))
                    continue
                args = (model, attack, x[local].to(device), y[local].to(device), threat, idx,
                        seed * 1_000_003 + zlib.crc32(name.encode()) + b)
                if pool is None:
                    record(name, b, _attack_batch(*args))
                else:
                    jobs[pool.submit(_attack_batch, *args)] = (name, b)
            while len(jobs) > 2 * workers:   # a bounded window: the queued batches' images stay in memory
                land(wait(jobs, return_when=FIRST_COMPLETED).done)
        while jobs:
            land(wait(jobs, return_when=FIRST_COMPLETED).done)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return EvaluationReport(clean, outcomes)
