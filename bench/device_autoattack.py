"""Standard AutoAttack on a CIFAR-10 ResNet through ``rbl``, on every device present, in one run.

The same evaluation (``task=evaluate attack=autoattack``, the same images, seed and batch size) runs on the
CPU and, when CUDA is present, on the GPU; it prints each device's time, clean and robust accuracy, the time
ratio CPU / GPU, and whether the per-example verdicts agree (the tolerance below). Without a GPU it runs the
CPU half and says so. The network is ``real_onnx/sri_resnet_b`` (a VNN-COMP CIFAR-10 ResNet, read by the
suite's ONNX reader, with the input normalisation its README states), or any ``--onnx`` file.
Usage: python bench/device_autoattack.py [--n 1000] [--eps 0.00784] [--batch 250] [--onnx PATH]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import torch  # noqa: E402

from robustbench_local.api import compose_config, run_task  # noqa: E402
from robustbench_local.results import decode_mask  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
os.environ.setdefault("RBL_DATA_ROOT", str(SHARED / "datasets"))
SRI = SHARED / "benchmarks/real_onnx/sri_resnet_b/onnx/resnet_3b2_bn_mixup_ssadv_4.0_bs128_lr-1_v2.onnx"
CIFAR_MEAN, CIFAR_STD = "[0.4914,0.4822,0.4465]", "[0.2023,0.1994,0.2010]"
# GPU and CPU kernels round differently, so an attack's path can differ on a few borderline examples.
AGREE_TOLERANCE = 0.01   # the share of examples whose verdict may differ between devices


def run_on(device: str, onnx: Path, n: int, eps: float, batch: int, folder: Path) -> tuple[float, dict]:
    """Seconds and metrics of one standard-AutoAttack evaluation on ``device``."""
    cfg = compose_config("model=onnx", f"model.path={onnx}", "model.name=bench_resnet", f"model.mean={CIFAR_MEAN}",
                         f"model.std={CIFAR_STD}", "dataset=cifar10", f"dataset.n_test={n}", "attack=autoattack",
                         f"threat.eps={eps}", f"batch_size={batch}", f"device={device}", "progress=false",
                         "task.print_leaderboard=false",
                         f"results.url=sqlite:///{folder / 'rows.db'}", f"results.state_dir={folder / device}")
    start = time.perf_counter()
    (row,) = run_task(cfg)
    return time.perf_counter() - start, row.metrics


def main() -> None:
    """Run the CPU half, then the GPU half if CUDA is present; print times, ratio and agreement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="CIFAR-10 test images (the first n)")
    parser.add_argument("--eps", type=float, default=2 / 255, help="Linf, in [0, 1] pixels (sri_resnet_b: 2/255)")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--onnx", type=Path, default=SRI)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rbl-device-bench-"))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {}
    print(f"{args.onnx.name}, standard AutoAttack Linf eps={args.eps:.5f}, {args.n} CIFAR-10 test images, "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}")
    for device in devices:
        seconds, metrics = run_on(device, args.onnx, args.n, args.eps, args.batch, folder)
        results[device] = (seconds, metrics)
        print(f"{metrics.get('gpu', metrics['device']):>28}: {seconds:8.1f} s  clean {metrics['clean_acc']:.4f}  "
              f"AutoAttack {metrics['robust_acc']:.4f}", flush=True)
    if "cuda" not in results:
        print("no CUDA device here: the CPU half only")
        return
    (cpu_s, cpu), (gpu_s, gpu) = results["cpu"], results["cuda"]
    key = next(iter(cpu["masks"]))
    a, b = decode_mask(cpu["masks"][key]), decode_mask(gpu["masks"][key])
    differ = sum(x != y for x, y in zip(a, b)) / len(a)
    print(f"time CPU / GPU = {cpu_s / gpu_s:.1f}x")
    print(f"verdicts differ on {differ:.2%} of examples (tolerance {AGREE_TOLERANCE:.0%}): "
          f"{'agree' if differ <= AGREE_TOLERANCE else 'DISAGREE'}; clean equal: {cpu['clean_acc'] == gpu['clean_acc']}")


if __name__ == "__main__":
    main()
