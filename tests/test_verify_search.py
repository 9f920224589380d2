"""Search semantics: an undecided Z3 leaf never ends the search; only a spent budget is a timeout."""
from __future__ import annotations

import time

import numpy as np

from verify import smt
from verify.bounds import TorchNet
from verify.branch_and_bound import input_split
from verify.marabou_baseline import float32_network
from verify.network import random_relu_network
from verify.spec import Property, Term
from verify.verdict import Verdict


def _tight_term(seed: int, offset: float) -> tuple:
    net = float32_network(random_relu_network([2, 8, 8, 2], seed=seed))
    lo, hi = np.zeros(2), np.ones(2)
    y = net.forward(lo + np.random.default_rng(seed).random((4000, 2)))
    v = y[:, 0] - y[:, 1]
    t = v.min() + offset * (v.max() - v.min())
    return net, Term(lo, hi, [(np.array([[1.0, -1.0]]), np.array([t]))])


def test_undecided_z3_leaf_is_split_and_retried(monkeypatch):
    real = smt.check_group
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        # every other Z3 call gives up, as a leaf with too little time would
        calls["n"] += 1
        return (smt.UNKNOWN, None) if calls["n"] % 2 else real(*args, **kwargs)

    monkeypatch.setattr(smt, "check_group", flaky)
    for seed, offset, want in ((5001, -0.1, "holds"), (5002, 0.05, "violated")):
        net, term = _tight_term(seed, offset)
        cex = Property([term]).is_counterexample
        # max_depth=0: every open box is a Z3 leaf, so the first one is undecided at once
        res = input_split(TorchNet(net), term, time.monotonic() + 30, max_depth=0, attack_steps=0,
                          check_cex=lambda x: cex(x, net.forward(x)))
        assert res.status == want, res.reason
        if want == "holds":
            assert res.stats["z3_retries"] >= 1  # the undecided leaves were retried, not the end


def test_only_a_spent_budget_is_a_timeout():
    net, term = _tight_term(5003, -0.001)
    res = input_split(TorchNet(net), term, time.monotonic() - 1.0)
    assert res.status == "unknown" and res.reason.startswith("timeout")
    assert Verdict("unknown", reason=res.reason).vnncomp == "timeout"
    # giving up for another reason is "unknown" with that reason
    assert Verdict("unknown", reason="Z3 leaf undecided within its time limit").vnncomp == "unknown"
    assert Verdict("unknown", reason="boundary: a point within the float margin").vnncomp == "unknown"
