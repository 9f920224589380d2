"""DLV on the zoo's tiny digits MLP: per heuristic, how many regions are safe / unsafe, the adversarial
examples found, agreement with brute-force enumeration of the same grid, and time.

    python bench/dlv_digits.py [--n 20] [--features 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from robustbench_local.data import load_dataset
    from robustbench_local.zoo import load_model
    from verify.dlv import DLVConfig, brute_force, dlv
    from verify.torch_import import from_torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--features", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    net = from_torch(load_model("standard_mlp_tiny", "digits"), (1, 8, 8))
    data = load_dataset("digits", "test", n=a.n)
    print("| heuristic | images | unsafe regions | adversarial grid points | agree with brute force | "
          "hidden candidates / mapped back | mean time s |")
    print("|---|---|---|---|---|---|---|")
    for h in ("activation", "derivative"):
        unsafe = advs = agree = cands = mapped = 0
        t0 = time.perf_counter()
        for i in range(a.n):
            x = data.x[i].double().numpy().reshape(-1)
            r = dlv(net, x, None, DLVConfig(num_features=a.features, heuristic=h, hidden_layers=1, max_map_back=20))
            reg = r.layers[0]
            truth = set(brute_force(net, x, r.label, reg.dims, reg.values))
            agree += {tuple(v[reg.dims]) for v in reg.adversarial} == truth
            unsafe += r.status == "violated"
            advs += len(reg.adversarial)
            cands += sum(lay.candidates for lay in r.layers[1:])
            mapped += sum(len(lay.adversarial) for lay in r.layers[1:])
        dt = (time.perf_counter() - t0) / a.n
        print(f"| {h} | {a.n} | {unsafe} | {advs} | {agree}/{a.n} | {cands} / {mapped} | {dt:.2f} |")


if __name__ == "__main__":
    main()
