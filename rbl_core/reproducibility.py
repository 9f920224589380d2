"""Pin the CPU kernels torch dispatches to, so a recipe gives the same weights on every x86-64 machine.

With the same seed and one thread, torch still rounds differently on different CPUs: ATen's vectorised kernels,
MKL's GEMM and oneDNN's convolutions each pick a code path for the instruction set they find (AVX2, AVX-512,
AMX), and each path sums in its own order. Training amplifies those last-bit differences into different
weights (measured: a CIFAR-10 ``small_cnn`` at 72.5 % clean accuracy on an AVX-512 machine, 69.5 % on the
AVX2 path). Every switch is read once, when its library first runs, so they are set on import of
``rbl_core``, before any tensor op; a value the user already set is kept.
"""
from __future__ import annotations

import os

# The broadest instruction set of current x86-64 machines; a CPU without it falls back, and cannot match.
PINNED_ISA = "AVX2"
_SWITCHES = {
    "ATEN_CPU_CAPABILITY": PINNED_ISA.lower(),   # ATen's own vectorised kernels
    "MKL_CBWR": f"{PINNED_ISA},STRICT",          # MKL's conditional numerical reproducibility
    "DNNL_MAX_CPU_ISA": PINNED_ISA,              # oneDNN (inference; training turns it off, see training.py)
}


def pin_cpu_kernels() -> None:
    """Set the kernel-selection switches to the pinned instruction set, keeping any the user set."""
    for name, value in _SWITCHES.items():
        os.environ.setdefault(name, value)


def kernels_pinned() -> bool:
    """True when torch's kernels in this process run the pinned instruction set (false if torch ran first)."""
    import torch

    return torch.backends.cpu.get_cpu_capability() == PINNED_ISA
