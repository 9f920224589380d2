"""Certify a zoo model on N test points at an eps with ``verify``: certified accuracy into the results store.

A point counts as certified only if it is classified correctly and the verifier proves the
whole threat ball keeps that class (``holds``). Misclassified points are ``violated`` (the
clean input is its own counterexample); a ``violated`` answer always carries an input that
the torch model itself (float32) misclassifies inside the ball, otherwise it is counted
``unknown``. Points run in parallel processes (``task.workers``), each with ``task.timeout``.

The same points are then attacked with PGD (``task.pgd_steps``): a certified point that PGD breaks
would mean an unsound proof, so the run fails with :class:`UnsoundCertificateError` instead of
storing the row; the row carries ``pgd_acc``, an upper bound the certified accuracy must stay under.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig

from rbl_core.remeasure import remeasure
from rbl_core.training import pgd_perturb
from robustbench_local.results import ResultRow
from robustbench_local.errors import ConfigError
from robustbench_local.tasks.base import TaskContext
from rbl_core.threat import ThreatModel
from verify.network import Network
from verify.parallel import run_parallel
from verify.spec import local_robustness
from verify.torch_import import from_onnx, from_torch
from verify.verifier import verify


class UnsoundCertificateError(RuntimeError):
    """A point the verifier certified was broken by an attack: the proof (or the attack's check) is wrong."""


def pgd_check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, statuses: str,
              steps: int = 50, restarts: int = 2, seed: int = 0) -> float:
    """PGD robust accuracy on ``(x, y)``; raises UnsoundCertificateError if it breaks a certified (``h``) point."""
    broken = torch.zeros(len(x), dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        x_adv = pgd_perturb(model, x, y, threat, steps=steps, generator=gen)
        broken |= remeasure(model, x, y, x_adv, threat).success
    with torch.no_grad():
        broken |= model(x).argmax(1) != y
    bad = [i for i, s in enumerate(statuses) if s == "h" and bool(broken[i])]
    if bad:
        raise UnsoundCertificateError(f"PGD broke {len(bad)} certified points (first: {bad[:5]}) at "
                                      f"{threat.norm.value} eps={threat.eps}: certified > empirical robust accuracy")
    return float(1 - broken.float().mean())


def _certify_point(net, x: np.ndarray, label: int, eps: float, norm: str, timeout: float, method: str, seed: int,
                   falsify: bool = True):
    prop = local_robustness(x, label, eps, net.output_dim, norm)
    v = verify(net, prop, timeout=timeout, method=method, seed=seed, falsify=falsify)
    return v.status, v.counterexample, v.reason, v.time_s


def certify(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, timeout: float = 30.0,
            method: str = "auto", workers: int = 2, seed: int = 0, net: Network | None = None,
            falsify: bool = True) -> dict:
    """Verify local robustness of ``model`` at every ``(x_i, y_i)``; returns counts, statuses and times.

    ``net`` is the network the verifier reasons about (default: imported from ``model``); counterexamples
    are always re-checked on ``model`` itself. ``falsify=False`` skips the verifier's sampling/PGD search
    (with ``method="bounds"`` a point is then one bound computation: proved or unknown).
    """
    if threat.norm.value not in ("Linf", "L2"):
        raise ConfigError(f"certify supports threat.norm Linf or L2, got {threat.norm.value}")
    if threat.eps is None or threat.eps < 0:
        raise ConfigError("certify needs a non-negative threat.eps")
    net = net if net is not None else from_torch(model, tuple(x.shape[1:]))
    with torch.no_grad():
        pred = model(x).argmax(1)
    statuses = ["violated"] * len(x)
    reasons = [""] * len(x)
    jobs, where = [], []
    for i in range(len(x)):
        if int(pred[i]) != int(y[i]):
            reasons[i] = "misclassified"
            continue
        jobs.append((net, x[i].double().numpy().reshape(-1), int(y[i]), float(threat.eps), threat.norm.value,
                     timeout, method, seed + i, falsify))
        where.append(i)
    times = [0.0] * len(x)
    for i, (st, val) in zip(where, run_parallel(_certify_point, jobs, workers=workers, hard_timeout=timeout + 60)):
        if st != "ok":
            statuses[i], reasons[i] = "unknown", str(val)
            continue
        status, cex, reason, t = val
        times[i] = t
        if status == "violated":
            xc = torch.from_numpy(np.asarray(cex)).float().reshape(1, *x.shape[1:])
            if not bool(remeasure(model, x[i:i + 1], y[i:i + 1], xc, threat).success[0]):
                status, reason = "unknown", "counterexample not confirmed by the float32 torch model"
        statuses[i], reasons[i] = status, reason
    n = len(x)
    counts = {s: statuses.count(s) for s in ("holds", "violated", "unknown")}
    return {"certified_acc": counts["holds"] / max(n, 1), "n": n, **counts,
            "clean_acc": float((pred == y).float().mean()), "statuses": "".join(s[0] for s in statuses),
            "reasons": {str(i): r for i, r in enumerate(reasons) if r and statuses[i] == "unknown"},
            "mean_time_s": float(np.mean([t for t in times if t > 0])) if any(times) else 0.0}


def _onnx_network(cfg: DictConfig) -> Network | None:
    """An ONNX model goes to the verifier as the file it is (no torch conversion in between)."""
    m = cfg.model
    if m.source != "onnx":
        return None
    if m.input_size is not None or m.mean is not None or m.std is not None or m.channel_order != "RGB" \
            or cfg.defense.wrapper is not None:
        raise ConfigError("task=certify verifies an ONNX file as it is: drop model.input_size/mean/std/"
                          "channel_order and the defense wrapper, or export the preprocessing into the ONNX graph")
    return from_onnx(m.path)


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Certify ``cfg.model`` on the first ``task.n`` (default ``dataset.n_test``) test points at ``cfg.threat``."""
    tc = cfg.task
    threat = ThreatModel(cfg.threat.norm, cfg.threat.eps)
    n = tc.n if tc.n is not None else cfg.dataset.n_test
    data = ctx.load_data("test", n=n)
    model = ctx.load_model().float().eval()
    start = time.perf_counter()
    metrics = certify(model, data.x, data.y, threat, timeout=tc.timeout,
                      method=tc.method, workers=tc.workers, seed=cfg.seed, net=_onnx_network(cfg), falsify=tc.falsify)
    if tc.pgd_steps:
        metrics["pgd_acc"] = pgd_check(model, data.x, data.y, threat, metrics["statuses"], tc.pgd_steps, seed=cfg.seed)
    config = ctx.run_config("dataset", "model", "defense", "threat", "task", "seed")
    pgd = f", PGD robust {metrics['pgd_acc']:.1%}" if "pgd_acc" in metrics else ""
    print(f"certified {metrics['holds']}/{metrics['n']} (violated {metrics['violated']}, unknown {metrics['unknown']}) "
          f"at {threat.norm.value} eps={threat.eps}{pgd}")
    yield ctx.row("certification", "verify", metrics, config, time.perf_counter() - start, threat=threat,
                  model_info=True)
