"""Input-domain clipping is sound: every sampled violating point of a box lies in its clipped box."""
from __future__ import annotations

import numpy as np
import torch

from verify.bounds import TorchNet, compute_bounds
from verify.domain_clip import clip_domains
from verify.network import random_relu_network


def _violating_points(tn: TorchNet, lo, hi, C, d, slices, rng, n=20000) -> torch.Tensor:
    x = lo + (hi - lo) * torch.from_numpy(rng.random((n, lo.shape[0])))
    val = tn.forward(x) @ C.T - d
    bad = torch.zeros(n, dtype=torch.bool)
    for s in slices:
        bad |= val[:, s].max(1).values <= 0
    return x[bad]


def _clip_case(seed: int, slices: list[slice], q: float, rng):
    tn = TorchNet(random_relu_network([3, 10, 10, 3], seed=700 + seed))
    # rows: output 0 below output 1, below output 2, and output 1 below output 2; thresholds
    # at a low quantile leave a small violating part of the box
    C = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    d = torch.quantile(tn.forward(torch.from_numpy(rng.random((4000, 3)))) @ C.T, q, dim=0)
    lo = torch.from_numpy(rng.random((1, 3)) * 0.5)
    hi = lo + 0.5
    bd = compute_bounds(tn, lo, hi, C, d, "crown")
    refuted = torch.stack([bd.spec_lower[:, s].max(1).values > 0 for s in slices], 1)
    clo, chi, ref = clip_domains(bd.spec_A, bd.spec_c, lo, hi, refuted, slices, margin=0.0)
    return tn, C, d, lo, hi, clo, chi, ref


def test_clipped_box_keeps_every_violation_and_shrinks():
    rng = np.random.default_rng(0)
    # a conjunction of two rows alone, and the same with a single-row group beside it (the hull)
    for slices, min_shrunk in (([slice(0, 2)], 4), ([slice(0, 2), slice(2, 3)], 0)):
        shrunk = checked = 0
        for seed in range(12):
            tn, C, d, lo, hi, clo, chi, ref = _clip_case(seed, slices, 0.1, rng)
            bad = _violating_points(tn, lo[0], hi[0], C[:slices[-1].stop], d[:slices[-1].stop], slices, rng)
            if bad.shape[0]:
                checked += 1
                assert not bool(ref.all()), f"seed {seed}: a box with violations was closed"
                assert bool(((bad >= clo) & (bad <= chi)).all()), f"seed {seed}: a violation lies outside the clip"
            if not bool(ref.all()):
                shrunk += int(bool(((chi - clo) / (hi - lo)).prod() < 0.9))
        assert checked >= 4 and shrunk >= min_shrunk, (slices, checked, shrunk)
