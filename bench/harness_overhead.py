"""AutoAttack standard through the harness vs. pyautoattack called directly, same model and data, one run.

Prints both robust accuracies (they must agree) and the time ratio harness / direct (target <= 1.05).
Usage: python bench/harness_overhead.py [--n 200] [--eps 0.1] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import torch  # noqa: E402
from pyautoattack import AutoAttack  # noqa: E402

from attacks.adapters.autoattack_adapter import AutoAttackAdapter, _reset_dynamic_check  # noqa: E402
from robustbench_local.data import load_dataset  # noqa: E402
from robustbench_local.evaluation import evaluate  # noqa: E402
from rbl_core.threat import ThreatModel  # noqa: E402
from robustbench_local.zoo import load_model  # noqa: E402


def direct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, float]:
    """pyautoattack on its own: robust accuracy and seconds."""
    _reset_dynamic_check()
    start = time.perf_counter()
    x_adv, _ = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu") \
        .run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        acc = float((model(x_adv).argmax(1) == y).float().mean())
    return acc, time.perf_counter() - start


def harness(model: torch.nn.Module, data, eps: float) -> tuple[float, float]:
    """The same attack through robustbench_local.evaluation: robust accuracy and seconds."""
    start = time.perf_counter()
    report = evaluate(model, data, {"autoattack": AutoAttackAdapter(seed=0, batch_size=len(data))},
                      ThreatModel("Linf", eps), batch_size=len(data), progress=False)
    return report.metrics()["robust_acc"], time.perf_counter() - start


def main() -> None:
    """Alternate direct and harness runs and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model("standard_cnn", "digits")
    data = load_dataset("digits", "test", n=args.n)
    t_direct, t_harness = [], []
    for _ in range(args.repeats):
        acc_d, t = direct(model, data.x, data.y, args.eps)
        t_direct.append(t)
        acc_h, t = harness(model, data, args.eps)
        t_harness.append(t)
    ratio = min(t_harness) / min(t_direct)
    print(f"digits standard_cnn, n={args.n}, Linf eps={args.eps}, AutoAttack standard, 1 thread")
    print(f"direct pyautoattack : robust acc {acc_d:.4f}, best of {args.repeats}: {min(t_direct):.2f} s")
    print(f"through the harness : robust acc {acc_h:.4f}, best of {args.repeats}: {min(t_harness):.2f} s")
    print(f"time ratio harness/direct = {ratio:.3f} (target <= 1.05); same robust accuracy: {round(acc_d * args.n) == round(acc_h * args.n)}")


if __name__ == "__main__":
    main()
