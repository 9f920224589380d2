"""Throughput of CUDA poisoning (images/s) on CIFAR-10-sized images vs a plain torch conv over the same tensor.

    python bench/unlearnable_generation.py [--n 10000] [--repeats 5] [--threads 1]

The baseline is the bare convolution the method cannot avoid: one fixed 3x3 kernel applied
depthwise to the same uint8 (N, 3, 32, 32) tensor (float conversion included, nothing else).
CUDA adds the per-class kernel gather, the per-image max normalisation, uint8 quantisation and
the mix selection. The plain conv is timed three ways (batched groups=C; one grouped call over
the whole tensor; the grouped call in CUDA's 2,048-image chunks, which is cache-friendlier), and
Ratio = CUDA time / the fastest of them (target <= 1.5). All are timed in this run, best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attacks.unlearnable.unlearnable import _CHUNK, CudaConfig, class_kernels, poison_images  # noqa: E402


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Time both, print images/s and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (args.n,), generator=gen)
    weight = class_kernels(1, 3, 0.3, key=0)[0].expand(3, 1, 3, 3).contiguous()
    cfg = CudaConfig(kernel_size=3, blur=0.3, mix=1.0, key=0)

    def plain_batched() -> torch.Tensor:  # (N, C, H, W), groups = C
        return F.conv2d(x.float(), weight, padding=1, groups=3)

    def plain_grouped() -> torch.Tensor:  # (1, N*C, H, W), groups = N*C: the layout CUDA uses
        return F.conv2d(x.float().reshape(1, -1, 32, 32), weight.repeat(args.n, 1, 1, 1), padding=1,
                        groups=3 * args.n)

    def plain_chunked() -> list[torch.Tensor]:  # the grouped layout in CUDA's 2,048-image chunks
        w = weight.repeat(_CHUNK, 1, 1, 1)
        return [F.conv2d(x[i:i + _CHUNK].float().reshape(1, -1, 32, 32), w[:3 * min(_CHUNK, args.n - i)],
                         padding=1, groups=3 * min(_CHUNK, args.n - i)) for i in range(0, args.n, _CHUNK)]

    t_batched = best_of(plain_batched, args.repeats)
    t_grouped = best_of(plain_grouped, args.repeats)
    t_chunked = best_of(plain_chunked, args.repeats)
    t_cuda = best_of(lambda: poison_images(x, y, 10, cfg), args.repeats)
    t_base = min(t_batched, t_grouped, t_chunked)  # compare against the fastest plain conv
    print(f"images: {args.n} x 3 x 32 x 32 uint8, torch threads: {args.threads}, best of {args.repeats}")
    print(f"plain conv (N,C,H,W) groups=C     : {args.n / t_batched:12.0f} images/s ({t_batched * 1e3:.1f} ms)")
    print(f"plain conv (1,N*C,H,W) groups=N*C : {args.n / t_grouped:12.0f} images/s ({t_grouped * 1e3:.1f} ms)")
    print(f"plain conv, same in 2048-chunks   : {args.n / t_chunked:12.0f} images/s ({t_chunked * 1e3:.1f} ms)")
    print(f"CUDA poison_images (mix=1)        : {args.n / t_cuda:12.0f} images/s ({t_cuda * 1e3:.1f} ms)")
    print(f"ratio CUDA / fastest plain conv   : {t_cuda / t_base:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
