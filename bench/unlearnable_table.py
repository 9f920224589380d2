"""The full CUDA table (not CI): clean vs CUDA-trained victims; ERM / Linf-AT / L2-AT; with and
without augmentation; mix 0.25 / 0.5 / 1.0; the one-kernel control and the class-kernel oracle.

    # run (parts can run in parallel processes, each appending to the same JSONL; finished victims are skipped)
    python bench/unlearnable_table.py run --dataset cifar10 --trainings erm --augment no,yes
    python bench/unlearnable_table.py run --dataset cifar10 --trainings linf_at,l2_at --augment no --mixes 1.0
    # print the markdown table and draw accuracy-vs-mix from everything recorded
    python bench/unlearnable_table.py report --dataset cifar10

Defaults are the scale that shows the effect on one CPU core: the 4,660 exact CIFAR-10 training
images, the zoo's ``cnn_bn_small``, SGD + one-cycle, 20 epochs (MNIST: 8,000 images, 10 epochs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attacks.unlearnable.evaluation import CudaEvalResult, VictimConfig, format_table, sweep  # noqa: E402
from attacks.unlearnable.unlearnable import CudaConfig  # noqa: E402
from robustbench_local.data import load_dataset  # noqa: E402
from rbl_core.io import canonical_json  # noqa: E402

NORMS = {"erm": None, "linf_at": "Linf", "l2_at": "L2"}
# AT budgets for images in [0, 1]: CIFAR 4/255 (the paper's CIFAR AT), L2 0.25; MNIST the usual 0.1 / 1.0
AT_EPS = {"cifar10": {"Linf": 4 / 255, "L2": 0.25}, "mnist": {"Linf": 0.1, "L2": 1.0}}
EPOCHS = {"cifar10": 20, "mnist": 10}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def load_records(path: Path) -> list[CudaEvalResult]:
    """Every result recorded in the JSONL file (none if it does not exist)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out.append(CudaEvalResult.from_record(rec["config"], rec["metrics"]))
    return out


def run(args: argparse.Namespace) -> None:
    """Train the requested part of the grid, appending each result to the JSONL file."""
    torch.set_num_threads(args.threads)
    root = args.data_root
    train = load_dataset(args.dataset, "train", root=root, n=args.n_train)
    test = load_dataset(args.dataset, "test", root=root, n=args.n_test)
    epochs = args.epochs or EPOCHS.get(args.dataset, 30)
    mixes = tuple(float(m) for m in _csv(args.mixes))
    cuda = CudaConfig(kernel_size=args.kernel_size, blur=args.blur, key=args.key)
    # Finished victims are matched by the canonical JSON of their config, the form every key is built on.
    done = {canonical_json(r.config()) for r in load_records(args.out)}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(result: CudaEvalResult) -> None:
        # Appending one line, not atomic_write: parallel runs share this JSONL, and rewriting the
        # whole file would drop the lines other processes appended meanwhile.
        with open(args.out, "a") as fh:
            fh.write(json.dumps({"config": result.config(), "metrics": result.metrics()}) + "\n")
        print(format_table([result]).splitlines()[-1], f"({result.time_s:.0f} s)", flush=True)

    for training in _csv(args.trainings):
        norm = NORMS[training]
        for aug in _csv(args.augment):
            victim = VictimConfig(architecture=args.arch, epochs=epochs, lr=args.lr, batch_size=args.batch_size,
                                  optimizer="sgd", weight_decay=5e-4, adversarial=norm,
                                  eps=AT_EPS[args.dataset][norm] if norm else 0.0, steps=args.at_steps,
                                  augment=aug in ("yes", "true", "1"), seed=args.seed)
            expected = [replace(cuda, mix=m) for m in mixes]
            if not args.no_control:
                expected.append(replace(cuda, mix=1.0, same=True))
            keys = {canonical_json({"dataset": train.name, "n_train": len(train), "n_test": len(test),
                                    "cuda": c.__dict__, "victim": victim.__dict__}) for c in expected}
            if keys <= done:
                print(f"skip {training} aug={aug}: already recorded in {args.out}")
                continue
            start = time.perf_counter()
            for result in sweep(train, test, cuda, [victim], mixes=mixes, same_control=not args.no_control,
                                progress=args.progress):
                record(result)
            print(f"{training} aug={aug}: {time.perf_counter() - start:.0f} s", flush=True)


def report(args: argparse.Namespace) -> None:
    """Print the markdown table of every recorded result and draw accuracy vs mix."""
    from attacks.unlearnable.plots import plot_accuracy_vs_mix

    results = load_records(args.out)
    if not results:
        sys.exit(f"no results in {args.out}: run `python bench/unlearnable_table.py run --dataset {args.dataset}` first")
    order = {"ERM": 0, "Linf-AT": 1, "L2-AT": 2}
    results.sort(key=lambda r: (order[r.victim.training_label], r.victim.augment, r.n_train, r.victim.epochs,
                                r.cuda.same, r.cuda.mix))
    print(format_table(results))
    plot = plot_accuracy_vs_mix(results, args.out.with_suffix(".png"))
    print(f"\nplot: {plot}")


def main() -> None:
    """Command line: ``run`` a part of the grid or ``report`` the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("run", "report"))
    ap.add_argument("--dataset", default="cifar10", choices=sorted(AT_EPS))
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--trainings", default="erm,linf_at,l2_at")
    ap.add_argument("--augment", default="no,yes")
    ap.add_argument("--mixes", default="0.25,0.5,1.0")
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--arch", default="cnn_bn_small")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--at-steps", type=int, default=7)
    ap.add_argument("--kernel-size", type=int, default=3)
    ap.add_argument("--blur", type=float, default=0.3)
    ap.add_argument("--key", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSONL of results (default results/cuda_table_<dataset>.jsonl)")
    args = ap.parse_args()
    if args.out is None:
        args.out = Path("results") / f"cuda_table_{args.dataset}.jsonl"
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
