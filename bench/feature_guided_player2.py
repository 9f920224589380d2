"""Player II ablation of the feature-guided game: cooperative vs random vs competitive on the same images.

Prints success rate, mean/median pixel-L0 (a failure counts as twice the budget) and the ratio of each mean to
the cooperative one measured in the same run.

    python bench/feature_guided_player2.py --dataset mnist --n 20 --max-queries 5000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from attacks.feature_guided.attack import FeatureGuidedAttack
from robustbench_local.data import load_dataset
from rbl_core.threat import ThreatModel
from robustbench_local.zoo import load_model


def main() -> None:
    """Run the three player II types and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=20, help="correctly classified test images")
    ap.add_argument("--max-queries", type=int, default=5000)
    ap.add_argument("--manipulation", default="tau", choices=("tau", "extreme"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model("standard_cnn", args.dataset)
    data = load_dataset(args.dataset, "test", n=10 * args.n)
    with torch.no_grad():
        ok = model(data.x).argmax(dim=1) == data.y
    x, y = data.x[ok][: args.n], data.y[ok][: args.n]
    threat = ThreatModel("L0", None)
    base = None
    print(f"{args.dataset}: {len(y)} images, L0 game, max_queries={args.max_queries}, manipulation={args.manipulation}")
    print("| player II | success % | mean L0 (fail = 2d) | median L0 (successes) | ratio to cooperative | s / image |")
    print("|---|---|---|---|---|---|")
    for p2 in ("cooperative", "random", "competitive"):
        attack = FeatureGuidedAttack(player2=p2, max_queries=args.max_queries, manipulation=args.manipulation)
        start = time.perf_counter()
        res = attack(model, x, y, threat)
        elapsed = (time.perf_counter() - start) / len(y)
        d = attack.distance_budget(threat, tuple(x.shape[1:]))
        score = torch.where(res.success, res.distance, torch.tensor(2 * d)).numpy()
        base = score.mean() if base is None else base
        med = float(np.median(res.distance[res.success].numpy())) if res.success.any() else float("nan")
        print(f"| {p2} | {100 * float(res.success.float().mean()):.1f} | {score.mean():.1f} | {med:.1f} | "
              f"{score.mean() / base:.2f} | {elapsed:.2f} |")


if __name__ == "__main__":
    main()
