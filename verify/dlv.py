"""DLV: safety verification of a classification decision under discretised manipulations.

Huang, Kwiatkowska, Wang, Wu, "Safety Verification of Deep Neural Networks", CAV 2017.
For an input ``x`` with decision ``label``:

1. *Feature selection* at the input layer: ``num_features`` dimensions by the "activation"
   heuristic (largest values) or the "derivative" one (largest ``|d logit_label / d x_p|``).
2. *Region* ``eta_0``: each selected ``p`` moves in steps of ``span`` up to ``num_span`` steps,
   clipped to the pixel range; the others stay fixed. Its discretisation is the grid of
   values ``clip(x_p + k * span)``, ``|k| <= num_span``.
3. *Exhaustive search* of the grid with Z3: the network is encoded exactly (ReLU case
   splits, weights as rationals) on the grid (each selected input is one of its allowed
   values) together with "some other class scores >= the label's"; every model is an
   adversarial example, re-checked by a forward pass and blocked, until UNSAT. No model at
   all proves the region safe for this manipulation family (a proof, not sampling). Bounds
   (CROWN) over the grid's bounding box are tried first: if they prove it, Z3 is skipped.
4. *Layer by layer*: the region is propagated to hidden layer ``k``: for each selected neuron
   (same heuristics) Z3 finds the smallest ``m`` such that every point of ``eta_{k-1}`` keeps it
   in ``[a_q - eps_k m, a_q + eps_k m]`` ("stretch" with precision ``eps_k``; binary search
   between 0 and the interval-bound answer), the region is discretised with step ``eps_k``, its
   grid is pushed through the rest of the network, and each misclassified grid point is
   *mapped back*: Z3 looks for an input of the ``eta_0`` grid whose activations at the selected
   neurons lie within ``eps_k / 2`` of it and that is misclassified. Mapped-back points are
   genuine adversarial examples; the others are reported as spurious.

"Safe" is relative to the chosen dimensions, span and precision (DLV's minimality
assumption), never full L-inf robustness.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import z3

from . import smt
from .bounds import TorchNet, compute_bounds
from .network import Network, UnsupportedOperationError


@dataclass
class DLVConfig:
    """DLV parameters (defaults follow DLV's MNIST configuration, scaled to tiny inputs)."""

    num_features: int = 5          # featureDims at the input layer
    span: float = 1.0              # step s_p (1.0 with pixels in [0,1]: flip to an extreme)
    num_span: int = 1              # m_p: steps in each direction
    heuristic: str = "activation"  # "activation" | "derivative"
    hidden_layers: int = 1         # propagate stepwise through this many hidden layers
    hidden_features: int = 3       # selected neurons per hidden layer
    error_bound: float = 0.5       # eps_k: precision of the hidden-layer discretisation
    max_hidden_grid: int = 20000   # coarsen eps_k until the hidden grid is at most this big
    max_map_back: int = 50         # hidden-layer candidates to map back per layer
    clip: tuple[float, float] = (0.0, 1.0)
    timeout: float = 120.0
    exit_when_found: bool = False  # DLV's exitWhen=foundFirst

    def __post_init__(self) -> None:
        if self.heuristic not in ("activation", "derivative"):
            raise ValueError(f"heuristic must be 'activation' or 'derivative', got {self.heuristic!r}")
        if self.num_features < 1 or self.num_span < 1 or self.span <= 0:
            raise ValueError("num_features and num_span must be >= 1 and span > 0")


@dataclass
class LayerReport:
    """What DLV did at one layer."""

    layer: int                     # 0 = input, k = hidden layer k (post-ReLU)
    dims: list[int]
    values: list[list[float]]      # the discretised values of each selected dimension
    grid_size: int
    safe: bool
    adversarial: list[np.ndarray] = field(default_factory=list)  # genuine inputs found at this layer
    candidates: int = 0            # misclassified grid points (hidden layers)
    spurious: int = 0              # candidates that do not map back to an input


@dataclass
class DLVResult:
    """Verdict for the discretised region: holds (no adversarial example), violated or unknown."""

    status: str
    label: int
    adversarial: list[np.ndarray]
    layers: list[LayerReport]
    reason: str = ""
    time_s: float = 0.0


def select_features(net: Network, x: np.ndarray, label: int, layer: int, n: int, heuristic: str) -> list[int]:
    """Indices of the ``n`` dimensions of ``layer`` (0 = input, k = hidden k) picked by the heuristic."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if heuristic == "activation":
        act = x if layer == 0 else np.maximum(net.activations(x)[layer - 1][0], 0)
        return [int(i) for i in np.argsort(-act, kind="stable")[:n]]
    model = net.to_torch()
    xt = torch.from_numpy(x).reshape(1, -1).requires_grad_(True)
    hs = []
    h = xt
    for mod in list(model)[1:]:
        h = mod(h)
        if isinstance(mod, torch.nn.ReLU):
            h.retain_grad()
            hs.append(h)
    h[0, label].backward()
    grad = xt.grad[0] if layer == 0 else hs[layer - 1].grad[0]
    return [int(i) for i in np.argsort(-grad.abs().numpy(), kind="stable")[:n]]


def input_values(x: np.ndarray, dims: list[int], span: float, num_span: int, clip=(0.0, 1.0)) -> list[list[float]]:
    """The discretised values of each selected input: ``clip(x_p + k span)``, ``|k| <= num_span``."""
    out = []
    for p in dims:
        vals = {float(np.clip(x[p] + k * span, *clip)) for k in range(-num_span, num_span + 1)}
        out.append(sorted(vals))
    return out


def reduced_network(net: Network, x: np.ndarray, dims: list[int]) -> Network:
    """The network as a function of the selected inputs only (the others folded into the bias)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    rest = np.setdiff1d(np.arange(net.input_dim), dims)
    w0 = net.weights[0]
    b0 = net.biases[0] + w0[:, rest] @ x[rest]
    return Network([w0[:, dims]] + net.weights[1:], [b0] + net.biases[1:], (len(dims),), net.name + "_reduced")


def is_misclassified(y: np.ndarray, label: int) -> np.ndarray:
    """True where some other class scores at least as high as ``label`` (ties count as unsafe)."""
    y = np.atleast_2d(y)
    others = np.delete(y, label, axis=1)
    return others.max(1) >= y[:, label]


def brute_force(net: Network, x: np.ndarray, label: int, dims: list[int], values: list[list[float]]) -> list[tuple]:
    """Every grid point (tuple of selected values) of the region that is misclassified."""
    grid = np.array(list(itertools.product(*values)), dtype=np.float64)
    xs = np.repeat(np.asarray(x, dtype=np.float64).reshape(1, -1), len(grid), axis=0)
    xs[:, dims] = grid
    bad = is_misclassified(net.forward(xs), label)
    return [tuple(g) for g in grid[bad]]


def _misclass_constraint(ys: list, label: int):
    return z3.Or([ys[j] - ys[label] >= 0 for j in range(len(ys)) if j != label])


def _bounds_prove_safe(red: Network, values: list[list[float]], label: int) -> bool:
    lo = np.array([min(v) for v in values])
    hi = np.array([max(v) for v in values])
    k = red.output_dim
    C = np.zeros((k - 1, k))
    for r, j in enumerate(j for j in range(k) if j != label):
        C[r, label], C[r, j] = 1.0, -1.0
    bd = compute_bounds(TorchNet(red), torch.from_numpy(lo)[None], torch.from_numpy(hi)[None],
                        torch.from_numpy(C), torch.zeros(k - 1, dtype=torch.float64))
    return bool((bd.spec_lower > 1e-7).all())


def search_input_region(net: Network, x: np.ndarray, label: int, dims: list[int], values: list[list[float]],
                        deadline: float, first_only: bool = False) -> tuple[list[np.ndarray], bool]:
    """All adversarial grid points of the input region, by Z3 enumeration with blocking clauses.

    Returns (adversarial inputs, complete); ``complete`` is False on timeout.
    """
    red = reduced_network(net, x, dims)
    if _bounds_prove_safe(red, values, label):
        return [], True
    lo = np.array([min(v) for v in values])
    hi = np.array([max(v) for v in values])
    s, xs, ys, _ = smt.encode(red, lo, hi, x_domain=values)
    s.add(_misclass_constraint(ys, label))
    found: list[np.ndarray] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return found, False
        s.set("timeout", max(1, int(left * 1000)))
        r = s.check()
        if r == z3.unsat:
            return found, True
        if r != z3.sat:
            return found, False
        m = s.model()
        vals = [smt._val(m.eval(v, model_completion=True)) for v in xs]
        # snap to the grid value (Z3's rational equals one of them exactly)
        vals = [min(vs, key=lambda v: abs(v - a)) for vs, a in zip(values, vals)]
        full = np.asarray(x, dtype=np.float64).reshape(-1).copy()
        full[dims] = vals
        if is_misclassified(net.forward(full), label)[0]:
            found.append(full)
            if first_only:
                return found, False
        s.add(z3.Or([v != smt._q(a) for v, a in zip(xs, vals)]))  # block this grid point


def dlv(net: Network, x: np.ndarray, label: int | None = None, config: DLVConfig | None = None) -> DLVResult:
    """Run DLV on input ``x`` (flat or image); ``label`` defaults to the network's decision."""
    cfg = config or DLVConfig()
    t0 = time.monotonic()
    deadline = t0 + cfg.timeout
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != net.input_dim:
        raise ValueError(f"input has {x.shape[0]} features, network expects {net.input_dim}")
    if not net.piecewise_linear:
        raise UnsupportedOperationError(f"DLV's Z3 search needs a ReLU network; {net.name} has {net.nonlinearities}")
    if label is None:
        label = int(np.argmax(net.forward(x)))
    dims = select_features(net, x, label, 0, cfg.num_features, cfg.heuristic)
    values = input_values(x, dims, cfg.span, cfg.num_span, cfg.clip)
    grid_size = int(np.prod([len(v) for v in values]))
    adv, complete = search_input_region(net, x, label, dims, values, deadline, cfg.exit_when_found)
    layers = [LayerReport(0, dims, values, grid_size, safe=complete and not adv, adversarial=adv)]
    all_adv = list(adv)
    if not (cfg.exit_when_found and adv):
        layers += _hidden_layers(net, x, label, dims, values, cfg, deadline, all_adv)
    if all_adv:
        status, reason = "violated", ""
    elif complete:
        status, reason = "holds", ""
    else:
        status, reason = "unknown", "timeout during the exhaustive search"
    return DLVResult(status, label, all_adv, layers, reason, time.monotonic() - t0)


def _hidden_layers(net: Network, x, label, dims, values, cfg: DLVConfig, deadline: float,
                   all_adv: list[np.ndarray]) -> list[LayerReport]:
    reports = []
    red = reduced_network(net, x, dims)
    lo0 = np.array([min(v) for v in values])
    hi0 = np.array([max(v) for v in values])
    acts = [np.maximum(a[0], 0) for a in net.activations(x)[:-1]]
    seen = {tuple(a) for a in all_adv}
    from .bounds import bounds_numpy

    lows, ups, _, _ = bounds_numpy(red, lo0, hi0)
    # one exact encoding of the reduced network on the eta_0 grid, shared by all queries
    s_reg, xs, ys, hidden = smt.encode(red, lo0, hi0, lows, ups, x_domain=values)
    s_adv, xs_a, ys_a, hidden_a = smt.encode(red, lo0, hi0, lows, ups, x_domain=values)
    s_adv.add(_misclass_constraint(ys_a, label))
    for k in range(1, min(cfg.hidden_layers, net.num_layers - 1) + 1):
        if time.monotonic() > deadline:
            break
        sel = select_features(net, x, label, k, cfg.hidden_features, cfg.heuristic)
        eps = cfg.error_bound
        spans = []
        for q in sel:
            a_q = acts[k - 1][q]
            h_lo, h_hi = max(lows[k - 1][q], 0.0), max(ups[k - 1][q], 0.0)
            # the CROWN bounds give a sound starting m for the Z3 stretch search
            m_max = int(math.ceil(max(h_hi - a_q, a_q - h_lo, 0.0) / eps)) + 1
            hq = hidden[k - 1][q] if hidden[k - 1][q] is not None else z3.RealVal(0)
            spans.append(_stretch_q(s_reg, hq, a_q, eps, m_max, deadline))
        # precision synthesis: coarsen until the grid is small enough
        while np.prod([2 * m + 1 for m in spans]) > cfg.max_hidden_grid:
            eps *= 2
            spans = [int(math.ceil(m / 2)) for m in spans]
        hvals = [sorted({max(0.0, acts[k - 1][q] + j * eps) for j in range(-m, m + 1)}) for q, m in zip(sel, spans)]
        grid = np.array(list(itertools.product(*hvals)), dtype=np.float64)
        hs = np.repeat(acts[k - 1].reshape(1, -1), len(grid), axis=0)
        hs[:, sel] = grid
        suffix = Network(net.weights[k:], net.biases[k:])
        bad = grid[is_misclassified(suffix.forward(hs), label)]
        rep = LayerReport(k, sel, hvals, len(grid), safe=len(bad) == 0, candidates=len(bad))
        for cand in bad[: cfg.max_map_back]:
            if time.monotonic() > deadline:
                break
            xin = _map_back(s_adv, xs_a, hidden_a[k - 1], sel, cand, eps, values, deadline)
            if xin is None:
                rep.spurious += 1
                continue
            full = x.copy()
            full[dims] = xin
            if is_misclassified(net.forward(full), label)[0]:
                rep.adversarial.append(full)
                if tuple(full) not in seen:
                    seen.add(tuple(full))
                    all_adv.append(full)
            else:
                rep.spurious += 1
        reports.append(rep)
    return reports


def _stretch_q(s, hq, a_q: float, eps: float, m_max: int, deadline: float) -> int:
    """Smallest m such that Z3 proves h_q stays within a_q +- eps m on the region (binary search)."""
    lo_m, hi_m = 0, m_max  # m_max is sound: it comes from the bounds
    while lo_m < hi_m:
        mid = (lo_m + hi_m) // 2
        s.push()
        s.add(z3.Or(hq > smt._q(a_q + eps * mid), hq < smt._q(a_q - eps * mid)))
        s.set("timeout", max(1, int(max(0.01, deadline - time.monotonic()) * 1000)))
        r = s.check()
        s.pop()
        if r == z3.unsat:
            hi_m = mid
        else:
            lo_m = mid + 1  # sat (or unknown): the region reaches beyond mid steps
    return hi_m


def _map_back(s, xs, hk, sel: list[int], cand: np.ndarray, eps: float, values, deadline: float
              ) -> np.ndarray | None:
    """An input of the eta_0 grid whose layer-k activations at ``sel`` lie within eps/2 of ``cand``
    and that is misclassified (``s`` already says so); None if Z3 proves there is none or times out."""
    s.push()
    for q, c in zip(sel, cand):
        e = hk[q] if hk[q] is not None else z3.RealVal(0)
        s.add(e >= smt._q(c - eps / 2), e <= smt._q(c + eps / 2))
    s.set("timeout", max(1, int(max(0.01, deadline - time.monotonic()) * 1000)))
    r = s.check()
    vals = None
    if r == z3.sat:
        m = s.model()
        vals = [smt._val(m.eval(v, model_completion=True)) for v in xs]
    s.pop()
    if vals is None:
        return None
    return np.array([min(vs, key=lambda v: abs(v - a)) for vs, a in zip(values, vals)])
