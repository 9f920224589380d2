"""Queries MAP-Elites needs to fool every class vs. random sampling of the same encoding (same run).

    python bench/fooling_search_efficiency.py --dataset mnist --threshold 0.99 --budget 40000

For each encoding (direct, CPPN) it runs MAP-Elites until every class reaches the threshold, then
draws the same encoding's random genomes (the initial population's law) with the same query budget
and reports the ratio of queries (or a lower bound when random sampling never gets there).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from attacks.black_box import ProbabilityOracle
from attacks.fooling.cppn import CPPNEncoding
from attacks.fooling.direct_encoding import DirectEncoding
from attacks.fooling.map_elites import MapElitesConfig, map_elites_fooling
from robustbench_local.data import load_dataset
from robustbench_local.zoo import load_model


def random_search(oracle: ProbabilityOracle, encoding, num_classes: int, threshold: float, budget: int,
                  seed: int, batch: int = 200) -> tuple[int | None, float]:
    """Queries until every class has a random genome above `threshold` (None if never), and the best min."""
    rng = np.random.default_rng(seed)
    best = np.zeros(num_classes)
    used = 0
    while used < budget:
        probs = oracle(encoding.render(encoding.random(batch, rng))).double().numpy()
        used += batch
        best = np.maximum(best, probs.max(axis=0))
        if best.min() >= threshold:
            return used, float(best.min())
    return None, float(best.min())


def main() -> None:
    """Print queries and wall time of MAP-Elites and random sampling, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="standard_cnn")
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--budget", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model, args.dataset)
    shape = load_dataset(args.dataset, "test", n=1).input_shape
    classes = 10
    for name, enc, cross in (("direct", DirectEncoding(shape), 0.5), ("cppn", CPPNEncoding(shape), 0.0)):
        oracle = ProbabilityOracle(model)
        start = time.perf_counter()
        cfg = MapElitesConfig(generations=10_000, cross_rate=cross, stop_confidence=args.threshold,
                              max_evaluations=args.budget)
        res = map_elites_fooling(oracle, enc, classes, cfg, seed=args.seed)
        me_time = time.perf_counter() - start
        me_ok = bool(res.confidence.min() >= args.threshold)
        start = time.perf_counter()
        rnd_queries, rnd_min = random_search(ProbabilityOracle(model), enc, classes, args.threshold,
                                             args.budget, args.seed)
        rnd_time = time.perf_counter() - start
        me_q = res.evaluations if me_ok else None
        if me_q and rnd_queries:
            ratio = f"{rnd_queries / me_q:.1f}x"
        elif me_q:
            ratio = f">{args.budget / me_q:.1f}x (random never reached it)"
        else:
            ratio = "n/a (MAP-Elites did not reach it)"
        print(f"{args.dataset} {name:>6}: MAP-Elites {me_q} queries {me_time:.1f}s "
              f"(min conf {res.confidence.min():.5f}); random {rnd_queries} queries {rnd_time:.1f}s "
              f"(best min conf {rnd_min:.5f}); random/MAP-Elites queries = {ratio}")


if __name__ == "__main__":
    main()
