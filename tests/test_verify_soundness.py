"""Soundness of verify on many small random ReLU networks, against exhaustive enumeration and Marabou."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from verify.bounds import TorchNet, bounds_numpy, compute_bounds
from verify.marabou_baseline import float32_network, marabou_verify_network
from verify.network import random_relu_network
from verify.smt import SAT, UNSAT, check_group
from verify.spec import Property, Term, local_robustness
from verify.verifier import verify


def _exhaustive(net, term: Term, C: np.ndarray, d: np.ndarray, final=None) -> bool:
    """Exact: is some x in the box with C f(x) <= d? Enumerates every feasible ReLU activation
    pattern depth-first (an LP per prefix prunes empty regions) and solves the final LP
    (or calls ``final(A_ub, b_ub)`` on each feasible final region)."""
    n0 = net.input_dim
    bounds = list(zip(term.lo, term.hi))

    def lp_feasible(A_ub, b_ub) -> bool:
        if not A_ub:
            return True
        r = linprog(np.zeros(n0), A_ub=np.array(A_ub), b_ub=np.array(b_ub), bounds=bounds, method="highs")
        return r.status == 0

    def rec(layer: int, M: np.ndarray, c: np.ndarray, A_ub: list, b_ub: list) -> bool:
        # h = M x + c is the (affine) input of layer `layer` on the current region
        z_M = net.weights[layer] @ M
        z_c = net.weights[layer] @ c + net.biases[layer]
        if layer == net.num_layers - 1:
            A2, b2 = A_ub + list(C @ z_M), b_ub + list(d - C @ z_c)
            return lp_feasible(A2, b2) and (final is None or final(np.array(A2), np.array(b2)))
        return branch(layer, 0, z_M, z_c, np.zeros_like(z_M), np.zeros_like(z_c), A_ub, b_ub)

    def branch(layer, j, z_M, z_c, h_M, h_c, A_ub, b_ub) -> bool:
        if j == z_M.shape[0]:
            return rec(layer + 1, h_M, h_c, A_ub, b_ub)
        for active in (True, False):
            row, rhs = (-z_M[j], z_c[j]) if active else (z_M[j], -z_c[j])  # z_j >= 0  /  z_j <= 0
            A2, b2 = A_ub + [row], b_ub + [rhs]
            if not lp_feasible(A2, b2):
                continue
            hM, hc = h_M.copy(), h_c.copy()
            if active:
                hM[j], hc[j] = z_M[j], z_c[j]
            if branch(layer, j + 1, z_M, z_c, hM, hc, A2, b2):
                return True
        return False

    return rec(0, np.eye(n0), np.zeros(n0), [], [])


def _l2_truth(net, prop: Property) -> bool | None:
    """Exact up to 1e-4 relative: does the L2 ball hold a counterexample? None when too close to call.

    Per feasible activation region of the violation set (a polytope) the squared distance to
    the centre is minimised (a convex QP, SLSQP); the ball meets the region iff that is <= eps.
    """
    from scipy.optimize import minimize

    _, x0, eps = prop.ball
    best = [np.inf]

    def final(A, b) -> bool:
        t = prop.terms[0]
        r = minimize(lambda x: ((x - x0) ** 2).sum(), np.clip(x0, t.lo, t.hi), jac=lambda x: 2 * (x - x0),
                     constraints=[{"type": "ineq", "fun": lambda x: b - A @ x, "jac": lambda x: -A}],
                     bounds=list(zip(t.lo, t.hi)), method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
        if r.success and (A @ r.x - b).max() <= 1e-9:
            best[0] = min(best[0], float(np.linalg.norm(r.x - x0)))
        return best[0] < eps * (1 - 1e-4)   # stop once the ball is surely hit

    for t in prop.terms:
        for C, d in t.groups:
            _exhaustive(net, t, C, d, final)
    if best[0] < eps * (1 - 1e-4):
        return True
    return False if best[0] > eps * (1 + 1e-4) else None


def _exhaustive_property(net, prop: Property) -> bool:
    return any(_exhaustive(net, t, C, d) for t in prop.terms for C, d in t.groups)


def _random_cases(n_cases: int, seed: int = 0, width=(3, 6), eps_choices=(0.02, 0.1, 0.3)):
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        n_in = int(rng.integers(2, 4))
        sizes = [n_in] + [int(rng.integers(*width)) for _ in range(int(rng.integers(1, 3)))] + [3]
        net = float32_network(random_relu_network(sizes, seed=1000 * seed + i))
        x = rng.uniform(0.2, 0.8, n_in)
        label = int(np.argmax(net.forward(x)))
        eps = float(rng.choice(eps_choices))
        yield net, local_robustness(x, label, eps, 3)


def _tight_cases(n_cases: int, seed: int = 0):
    """Properties whose threshold sits just beside the sampled minimum: bounds on the whole
    box cannot decide them, so the searches must branch."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        net = float32_network(random_relu_network([2, 8, 8, 2], seed=5000 + 100 * seed + i))
        lo, hi = np.zeros(2), np.ones(2)
        y = net.forward(lo + rng.random((4000, 2)) * (hi - lo))
        v = y[:, 0] - y[:, 1]
        t = v.min() + (0.02 if i % 2 else -0.02) * (v.max() - v.min())
        yield net, Property([Term(lo, hi, [(np.array([[1.0, -1.0]]), np.array([t]))])], f"tight{i}")


def test_bounds_contain_every_sampled_output():
    rng = np.random.default_rng(1)
    for s in range(20):
        net = random_relu_network([4, 8, 8, 3], seed=s)
        lo = rng.uniform(-1, 0, 4)
        hi = lo + rng.uniform(0.1, 1.0, 4)
        x = lo + rng.random((3000, 4)) * (hi - lo)
        y, pre = net.forward(x), net.activations(x)
        for method in ("interval", "symbolic", "crown"):
            L, U, out_lo, out_hi = bounds_numpy(net, lo, hi, method)
            assert (y >= out_lo).all() and (y <= out_hi).all(), method
            for k in range(2):
                assert (pre[k] >= L[k]).all() and (pre[k] <= U[k]).all(), method
        # back-substitution is never looser than intervals on the output
        _, _, il, ih = bounds_numpy(net, lo, hi, "interval")
        _, _, cl, ch = bounds_numpy(net, lo, hi, "crown")
        assert (cl >= il - 1e-9).all() and (ch <= ih + 1e-9).all()


def test_verdicts_match_exhaustive_enumeration():
    counts = {"holds": 0, "violated": 0}
    for net, prop in _random_cases(40):
        truth = _exhaustive_property(net, prop)   # True = a counterexample exists
        v = verify(net, prop, timeout=30)
        assert v.status in ("holds", "violated"), v.reason
        assert (v.status == "violated") == truth, (net.name, prop.name, v.status)
        if v.status == "violated":
            assert prop.is_counterexample(v.counterexample, net.forward(v.counterexample))
        counts[v.status] += 1
    # the random family must exercise both answers
    assert counts["holds"] >= 5 and counts["violated"] >= 5, counts


@pytest.mark.parametrize("method", ["input_split", "relu_split"])
def test_each_search_alone_matches_enumeration(method):
    branched = 0
    for net, prop in list(_random_cases(6, seed=3)) + list(_tight_cases(6, seed=1)):
        truth = _exhaustive_property(net, prop)
        v = verify(net, prop, timeout=30, falsify=False, method=method)
        assert v.status in ("holds", "violated"), v.reason
        assert (v.status == "violated") == truth
        # decided beyond the root bound: by branching or by an exact Z3 leaf
        branched += v.stats.get("boxes", v.stats.get("domains", 0)) > 1 or v.stats.get("z3_leaves", 0) > 0
    assert branched >= 3


def test_verdicts_match_marabou():
    disagreements = solved = 0
    for net, prop in _random_cases(25, seed=7):
        ours = verify(net, prop, timeout=30)
        ref = marabou_verify_network(net, prop, timeout=30)
        if ours.status != "unknown" and ref["status"] != "unknown":
            solved += 1
            disagreements += ours.status != ref["status"]
    assert solved >= 20
    assert disagreements == 0


def test_z3_encoding_is_exact_on_a_box():
    net = float32_network(random_relu_network([3, 5, 4, 2], seed=11))
    term = Term(np.zeros(3), np.ones(3), [])
    for thr in (-2.0, -0.5, 0.0, 0.5, 2.0):
        C, d = np.array([[1.0, -1.0]]), np.array([thr])  # y0 - y1 <= thr
        truth = _exhaustive(net, term, C, d)
        st, x = check_group(net, term.lo, term.hi, C, d, 0.0, 30)
        assert st == (SAT if truth else UNSAT)
        if st == SAT:
            y = net.forward(x)
            assert (C @ y - d <= 1e-9).all()


def test_holds_is_robust_to_a_float_margin():
    # a property that is true only up to 1e-12 must not be called "holds" by a verifier whose
    # proof needs margin 1e-7: the answer may be unknown or violated, never a wrong proof
    net = float32_network(random_relu_network([2, 4, 2], seed=5))
    lo, hi = np.zeros(2), np.ones(2)
    _, _, out_lo, _ = bounds_numpy(net, lo, hi, "crown")
    x = lo + np.random.default_rng(0).random((20000, 2)) * (hi - lo)
    true_min = net.forward(x)[:, 0].min()
    prop = Property([Term(lo, hi, [(np.array([[1.0, 0.0]]), np.array([true_min + 1e-12]))])])
    assert verify(net, prop, timeout=10).status in ("violated", "unknown")
    tn = TorchNet(net)
    bd = compute_bounds(tn, torch.from_numpy(lo)[None], torch.from_numpy(hi)[None],
                        torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    assert float(bd.spec_lower[0, 0]) <= true_min


def test_relu_splitting_with_small_z3_leaves_matches_enumeration():
    import time

    from verify.relu_split import relu_split

    splits = 0
    for net, prop in _tight_cases(4):
        truth = _exhaustive_property(net, prop)
        res = relu_split(TorchNet(net), prop.terms[0], time.monotonic() + 30, leaf_unstable=4,
                         check_cex=lambda x: prop.is_counterexample(x, net.forward(x)))
        assert res.status in ("holds", "violated"), res.reason
        assert (res.status == "violated") == truth
        splits += res.stats.get("domains", 0) > 1
    assert splits >= 2  # the family needs real branching, not just one bound computation


def _l2_cases(n_cases: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        n_in = int(rng.integers(2, 4))
        net = float32_network(random_relu_network([n_in, 6, 5, 3], seed=700 + 10 * seed + i))
        x = rng.uniform(0.3, 0.7, n_in)
        label = int(np.argmax(net.forward(x)))
        yield net, local_robustness(x, label, float(rng.choice([0.05, 0.15, 0.3])), 3, norm="L2", clip=None)


@pytest.mark.parametrize("method", ["input_split", "relu_split"])
def test_l2_verdicts_match_exact_region_distances(method):
    decided = proved_beyond_box = 0
    for net, prop in _l2_cases(10, seed=1):
        truth = _l2_truth(net, prop)
        v = verify(net, prop, timeout=30, method=method)
        if v.status == "violated":
            x = v.counterexample
            assert np.linalg.norm(x - prop.ball[1]) <= prop.ball[2]   # in the ball, re-checked
            assert prop.is_counterexample(x, net.forward(x))
        if truth is None:
            continue
        decided += 1
        assert v.status in ("holds", "violated"), v.reason
        assert (v.status == "violated") == truth, (net.name, prop.name, v.status)
        # a proof the ball's bounding box could not give: that box holds a counterexample
        proved_beyond_box += v.status == "holds" and _exhaustive_property(net, prop)
    assert decided >= 8
    assert proved_beyond_box >= 1


@pytest.mark.parametrize("branching", ["babsr", "area"])
def test_beta_crown_relu_splitting_matches_enumeration(branching):
    import time

    from verify.relu_split import relu_split

    splits = 0
    for net, prop in list(_tight_cases(6, seed=2)) + list(_random_cases(2, seed=4)):
        truth = _exhaustive_property(net, prop)
        for term in prop.terms:
            res = relu_split(TorchNet(net), term, time.monotonic() + 30, leaf_unstable=0, bounds="beta",
                             branching=branching, check_cex=lambda x: prop.is_counterexample(x, net.forward(x)))
            assert res.status in ("holds", "violated"), res.reason
            assert (res.status == "violated") == truth
            if res.status == "violated":
                assert prop.is_counterexample(res.x, net.forward(res.x))
            splits += res.stats.get("domains", 0) > 1
    assert splits >= 3
