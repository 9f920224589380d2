"""Train fully connected MNIST ReLU networks and export them with local-robustness properties.

Networks: 784 -> ``--layers`` hidden layers of ``--width`` ReLUs -> 10, trained (seeded, one
thread, a few epochs of Adam) on the carved MNIST training split of ``../shared/datasets``,
written as ONNX (MatMul/Add/Relu, input ``[1, 784]``). Properties: for each network the first
``--n-props`` test images it classifies correctly, at each L-inf ``--eps``, as VNN-LIB
("some other class scores >= the label" is the violation, inputs clipped to [0, 1]).
``instances.csv`` (onnx,vnnlib,timeout, relative to ``--out-dir``) lists every pair; run it with
``python bench/verify_vs_marabou.py --mnist OUT_DIR``.

    python bench/mnist_fc.py --out-dir /tmp/mnist_fc [--layers 2,4,6 --width 256 --eps 0.02,0.03,0.05]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robustbench_local.data import load_dataset  # noqa: E402
from verify.marabou_baseline import network_to_onnx  # noqa: E402
from verify.network import Network  # noqa: E402


def train_fc(x: torch.Tensor, y: torch.Tensor, hidden: int, width: int, epochs: int, seed: int) -> nn.Sequential:
    """A seeded ReLU MLP 784 -> hidden x width -> 10 trained with Adam (batch 128)."""
    torch.manual_seed(seed)
    sizes = [x.shape[1]] + [width] * hidden
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*mods, nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            idx = perm[i:i + 128]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def to_network(model: nn.Sequential, name: str) -> Network:
    """The IR network of a Linear/ReLU stack (float32 weights, exactly as exported)."""
    lins = [m for m in model if isinstance(m, nn.Linear)]
    return Network([m.weight.detach().double().numpy() for m in lins], [m.bias.detach().double().numpy() for m in lins],
                   (lins[0].in_features,), name)


def robustness_vnnlib(x: np.ndarray, label: int, eps: float, n_classes: int = 10) -> str:
    """VNN-LIB text: the L-inf box around ``x`` (clipped to [0, 1]) and "some class j scores >= label"."""
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    lines = [f"; MNIST local robustness, label {label}, eps {eps:g}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(x.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_classes)]
    for i in range(x.size):
        lines.append(f"(assert (<= X_{i} {float(hi[i])!r}))")
        lines.append(f"(assert (>= X_{i} {float(lo[i])!r}))")
    alts = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_classes) if j != label)
    lines.append(f"(assert (or {alts}))")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Train, export and write the instances CSV."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="/tmp/mnist_fc")
    ap.add_argument("--layers", default="2,4,6", help="numbers of hidden layers, one network each")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eps", default="0.02,0.03,0.05")
    ap.add_argument("--n-props", type=int, default=5, help="test images per network and eps")
    ap.add_argument("--timeout", type=float, default=120.0, help="timeout written to instances.csv")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out_dir)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    root = REPO.parent / "shared" / "datasets"
    train, test = load_dataset("mnist", "train", root), load_dataset("mnist", "test", root)
    xtr, ytr = train.x.reshape(len(train), -1), train.y
    xte, yte = test.x.reshape(len(test), -1), test.y
    rows = []
    for hidden in (int(h) for h in a.layers.split(",")):
        t0 = time.monotonic()
        model = train_fc(xtr, ytr, hidden, a.width, a.epochs, a.seed + hidden)
        with torch.no_grad():
            pred = model(xte).argmax(1)
        acc = float((pred == yte).float().mean())
        name = f"mnist_fc_{hidden}x{a.width}"
        net = to_network(model, name)
        network_to_onnx(net, out / "onnx" / f"{name}.onnx")
        print(f"{name}: test accuracy {acc:.3f} ({len(test)} images), trained in {time.monotonic() - t0:.1f} s",
              flush=True)
        correct = torch.nonzero(pred == yte).squeeze(1)[:a.n_props].tolist()
        for eps in (float(e) for e in a.eps.split(",")):
            for i in correct:
                vnn = f"vnnlib/{name}_img{i}_eps{eps:g}.vnnlib"
                (out / vnn).write_text(robustness_vnnlib(xte[i].double().numpy(), int(yte[i]), eps))
                rows.append([f"onnx/{name}.onnx", vnn, f"{a.timeout:g}"])
    with open(out / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    print(f"{len(rows)} instances in {out / 'instances.csv'}")


if __name__ == "__main__":
    main()
