"""Peak memory of an evaluation on the user's .npz data, streamed vs. loaded whole, at two data set sizes.

Writes .npz files of N random 224x224 RGB uint8 images (N = each of --sizes), evaluates a small CNN with
FGSM on each through ``robustbench_local.evaluation.evaluate`` in a fresh process, and prints each process's
peak resident memory: streamed (``dataset=npz`` as the suite reads it) and, as the baseline measured in the
same run, the same images loaded whole into one tensor. Streamed memory must not grow with N.
Usage: python bench/stream_memory.py [--sizes 1000 10000] [--image 224] [--batch 100] [--folder /tmp/x]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _child(path: str, mode: str, batch: int) -> None:
    """In a fresh process: evaluate, then print the peak RSS and the numbers as JSON."""
    import torch
    from torch import nn

    from attacks.adapters.foolbox_adapter import FoolboxAttack
    from rbl_core.data import DataSplit
    from rbl_core.threat import ThreatModel
    from robustbench_local.data import load_dataset
    from robustbench_local.evaluation import evaluate

    data = load_dataset("npz", path=path)
    if mode == "whole":
        data = DataSplit(data.x, data.y, data.num_classes, data.name, data.split, data.class_names)
    torch.manual_seed(0)
    model = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 10)).eval()
    report = evaluate(model, data, {"fgsm": FoolboxAttack("FGSM")}, ThreatModel("Linf", 2 / 255),
                      batch_size=batch, progress=False)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak_mib, "clean": report.clean_acc, "robust": report.metrics()["robust_acc"]}))


def _write(folder: Path, n: int, image: int) -> Path:
    """An .npz (stored, as np.savez writes) of n random images and labels, written in bounded memory."""
    import numpy as np

    path = folder / f"random_{n}_{image}.npz"
    if not path.exists():
        rng = np.random.default_rng(n)
        x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.uint8, shape=(n, image, image, 3))
        for start in range(0, n, 500):
            x[start:start + 500] = rng.integers(0, 256, size=(min(500, n - start), image, image, 3), dtype=np.uint8)
        x.flush()
        np.save(folder / "y.npy", rng.integers(0, 10, size=n))
        import zipfile
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.write(folder / "x.npy", "x.npy")
            archive.write(folder / "y.npy", "y.npy")
        (folder / "x.npy").unlink()
        (folder / "y.npy").unlink()
    return path


def main() -> None:
    """Run each (size, mode) in its own process and print the table and the growth ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--folder", type=Path, default=None, help="where the .npz files go (default: a temp dir)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    folder = args.folder or Path(tempfile.mkdtemp(prefix="rbl-stream-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[int, str], dict] = {}
    print(f"{'images':>8} {'mode':>9} {'peak RSS MiB':>13} {'clean':>7} {'robust':>7}")
    for n in args.sizes:
        path = _write(folder, n, args.image)
        for mode in ("streamed", "whole"):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), mode, str(args.batch)],
                                 check=True, capture_output=True, text=True).stdout
            results[n, mode] = json.loads(out.strip().splitlines()[-1])
            r = results[n, mode]
            print(f"{n:>8} {mode:>9} {r['peak_mib']:>13.0f} {r['clean']:>7.3f} {r['robust']:>7.3f}", flush=True)
    small, large = min(args.sizes), max(args.sizes)
    for mode in ("streamed", "whole"):
        ratio = results[large, mode]["peak_mib"] / results[small, mode]["peak_mib"]
        print(f"{mode}: peak RSS at {large} images / at {small} images = {ratio:.2f}")
    same = all(results[n, "streamed"]["robust"] == results[n, "whole"]["robust"] and
               results[n, "streamed"]["clean"] == results[n, "whole"]["clean"] for n in args.sizes)
    print(f"streamed and whole give the same numbers: {same}")


if __name__ == "__main__":
    main()
