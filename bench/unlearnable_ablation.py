"""CUDA strength vs kernel size and blur (not CI): one clean baseline, then one CUDA victim per variant.

    python bench/unlearnable_ablation.py --dataset mnist --variants 3:0.3,5:0.3,7:0.3,3:1.0 --epochs 10

Used to answer "what would make CUDA bite on MNIST" without tuning the default method. Prints the
same markdown rows as bench/unlearnable_table.py and appends them to results/cuda_ablation_<dataset>.jsonl.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attacks.unlearnable.evaluation import VictimConfig, clean_baseline, evaluate_cuda, format_table  # noqa: E402
from attacks.unlearnable.unlearnable import CudaConfig  # noqa: E402
from robustbench_local.data import load_dataset  # noqa: E402


def main() -> None:
    """Train the baseline, then each (kernel size, blur) variant at mix 1; print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--variants", default="3:0.3,5:0.3,7:0.3,3:1.0", help="kernel_size:blur,...")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--key", type=int, default=0)
    ap.add_argument("--arch", default="cnn_bn_small")
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path("results") / f"cuda_ablation_{args.dataset}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    train = load_dataset(args.dataset, "train", root=args.data_root, n=args.n_train)
    test = load_dataset(args.dataset, "test", root=args.data_root)
    victim = VictimConfig(architecture=args.arch, epochs=args.epochs, lr=args.lr, batch_size=128,
                          optimizer=args.optimizer, weight_decay=5e-4 if args.optimizer == "sgd" else 0.0)
    baseline = clean_baseline(train, test, victim)
    print(f"clean-trained: train {100 * baseline.train_acc:.1f} test {100 * baseline.test_acc:.1f}", flush=True)
    print(format_table([]))
    for spec in args.variants.split(","):
        k, blur = spec.split(":")
        cuda = CudaConfig(kernel_size=int(k), blur=float(blur), mix=1.0, key=args.key)
        result = evaluate_cuda(train, test, cuda, victim, baseline=baseline)
        print(format_table([result]).splitlines()[-1], f"k={k} blur={blur} {args.arch}/{args.optimizer}", flush=True)
        with open(out, "a") as fh:
            fh.write(json.dumps({"config": result.config(), "metrics": result.metrics()}) + "\n")


if __name__ == "__main__":
    main()
