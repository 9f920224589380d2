"""Time of one DVERGE epoch over one baseline-ensemble epoch (same data, same run), and the share of the
DVERGE epoch spent in feature distillation.

    python bench/dverge_epoch.py --dataset mnist --members 3 --n-train 1000
"""
from __future__ import annotations

import argparse
import time

import torch

from defenses.dverge.training import DvergeConfig, train_dverge
from robustbench_local.zoo.recipes_dverge import construct_ensemble
from robustbench_local.data import load_dataset
from robustbench_local.zoo.recipes import Recipe
from rbl_core.training import train_classifier


def main() -> None:
    """Measure and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--distill-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train = load_dataset(args.dataset, "train", n=args.n_train)
    recipe = Recipe("bench", args.dataset, "cnn_small", params={"members": args.members})
    ens = construct_ensemble(recipe, train.input_shape, train.num_classes)
    base_t, dv_t, dist_t, base_cpu, dv_cpu = [], [], [], [], []
    for r in range(args.repeats):
        # Process CPU time is reported beside wall time: on a shared machine it is the steadier measure.
        t0, c0 = time.perf_counter(), time.process_time()
        for k, m in enumerate(ens.members):
            train_classifier(m, train, epochs=1, lr=3e-3, batch_size=args.batch_size, seed=r * 100 + k, progress=False)
        base_t.append(time.perf_counter() - t0)
        base_cpu.append(time.process_time() - c0)
        cfg = DvergeConfig(epochs=1, batch_size=args.batch_size, distill_steps=args.distill_steps, seed=r)
        c0 = time.process_time()
        hist = train_dverge(ens, train.x, train.y, cfg, progress=None)
        dv_cpu.append(time.process_time() - c0)
        dv_t.append(hist.epoch_times[0])
        dist_t.append(hist.distill_times[0])
    b, d, s, bc, dc = min(base_t), min(dv_t), min(dist_t), min(base_cpu), min(dv_cpu)
    print(f"{args.dataset} n_train={args.n_train} members={args.members} distill_steps={args.distill_steps}")
    print(f"baseline epoch (all members): {b:.2f}s wall, {bc:.2f}s CPU   DVERGE epoch: {d:.2f}s wall, {dc:.2f}s CPU")
    print(f"ratio DVERGE/baseline: {d / b:.1f}x wall, {dc / bc:.1f}x CPU   "
          f"distillation share of DVERGE epoch: {s / d:.0%}")


if __name__ == "__main__":
    main()
