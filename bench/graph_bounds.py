"""Graph CROWN (verify.graph) against the dense CROWN (verify.bounds), and graph CROWN on a CIFAR-sized ResNet.

Part 1: the zoo's trained 8x8-digits CNNs (``standard_cnn``, ``ibp_cnn``), converted once to
the dense IR (torch_import) and once to the graph IR: both CROWNs bound the same L-inf boxes
around test images (all ten outputs, lower and upper); prints each one's time, the ratio and
the tightness difference (graph minus dense lower bound, dense minus graph upper bound: > 0
means the graph bound is tighter), in float64 and float32.
Part 2: a CIFAR-10-sized residual network (conv-BN-ReLU stem, three residual stages with
strided 1x1 shortcuts, average pooling, linear head; random weights, BatchNorm statistics
set as after training) bounded box by box by graph CROWN in float32 on the CPU and, when
present, on CUDA, with the peak memory of each.

    python bench/graph_bounds.py                 # both parts
    python bench/graph_bounds.py --boxes 4 --eps 0.002 --chunk 256 --cifar-boxes 2 --cifar-eps 0.002
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from robustbench_local.data import load_dataset  # noqa: E402
from robustbench_local.zoo import load_model  # noqa: E402
from verify.bounds import TorchNet, compute_bounds  # noqa: E402
from verify.graph import BoundedGraph, InputBox  # noqa: E402
from verify.graph.bounded import CHUNK  # noqa: E402
from verify.torch_import import from_torch  # noqa: E402


def _timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def _synced(out, dev: str):
    """``out`` once the device has finished (CUDA runs asynchronously)."""
    if dev == "cuda":
        torch.cuda.synchronize()
    return out


def dense_vs_graph(boxes: int, eps: float) -> None:
    """Part 1: same boxes, both CROWNs, per model and dtype."""
    data = load_dataset("digits", "test", n=boxes)
    x = torch.as_tensor(data.x, dtype=torch.float64)
    box = InputBox.linf(x, eps, (0.0, 1.0))
    C = torch.eye(10, dtype=torch.float64)
    for name in ("standard_cnn", "ibp_cnn"):
        model = load_model(name, "digits")
        net = from_torch(model, tuple(x.shape[1:]))
        tn = TorchNet(net)
        d, t_dense = _timed(lambda: compute_bounds(tn, box.lo.flatten(1), box.hi.flatten(1), torch.cat([C, -C]),
                                                   torch.zeros(20, dtype=torch.float64)))
        dl, du = d.spec_lower[:, :10], -d.spec_lower[:, 10:]
        for dtype in (torch.float64, torch.float32):
            bg = BoundedGraph(model, tuple(x.shape[1:]), dtype)
            bg.compute_bounds(box, C)  # warm-up
            b, t_graph = _timed(lambda: bg.compute_bounds(box, C))
            gain = torch.cat([b.lower.double() - dl, du - b.upper.double()])
            print(f"{name:13s} {str(dtype):14s} hidden {net.hidden_sizes}  dense {t_dense * 1e3:8.1f} ms  "
                  f"graph {t_graph * 1e3:8.1f} ms  dense/graph {t_dense / t_graph:6.2f}x  "
                  f"tightness gain min {gain.min():+.2e} median {gain.median():+.2e} max {gain.max():+.2e}  "
                  f"(mean width {float((du - dl).mean()):.3f})")
        bg = BoundedGraph(model, tuple(x.shape[1:]), torch.float32)
        a, t_alpha = _timed(lambda: bg.compute_bounds(box, C, "alpha-crown", iters=20))
        print(f"{name:13s} alpha-CROWN float32, 20 steps: {t_alpha * 1e3:8.1f} ms, mean width "
              f"{float((a.upper - a.lower).mean()):.3f} (dense CROWN {float((du - dl).mean()):.3f})")


class Block(nn.Module):
    """A basic residual block: conv-BN-ReLU-conv-BN plus the (1x1 strided conv-BN) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(branch(x) + shortcut(x))."""
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.short(x))


def cifar_resnet() -> nn.Module:
    """A small CIFAR ResNet (16-32-64 channels, one block per stage), eval mode."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), Block(16, 16, 1),
                      Block(16, 32, 2), Block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.2, 0.5)
    return m.eval()


def cifar(boxes: int, eps: float, chunk: int | None) -> None:
    """Part 2: graph CROWN per box on every device present, with peak memory."""
    model = cifar_resnet()
    x = torch.rand(boxes, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        bg = BoundedGraph(model.to(dev), (3, 32, 32), torch.float32, dev)
        times, unstable = [], []
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(boxes):
            box = InputBox.linf(x[i:i + 1].to(dev), eps, (0.0, 1.0))
            b, t = _timed(lambda: _synced(bg.compute_bounds(box, chunk=chunk), dev))
            times.append(t)
            st = b.state
            unstable.append(sum(int(((st.lower[k] < 0) & (st.upper[k] > 0)).sum()) for k in bg.graph.relu_inputs()))
        peak = (torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else
                (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
        kind = "peak CUDA allocated" if dev == "cuda" else "peak RSS growth"
        print(f"cifar_resnet  {dev:4s} eps {eps:g} chunk {chunk or CHUNK[dev]}: {1e3 * sum(times) / len(times):8.1f} ms/box "
              f"(first {1e3 * times[0]:.0f} ms), unstable ReLUs/box {sum(unstable) / len(unstable):.0f}, "
              f"mean output width {float((b.upper - b.lower).mean()):.3g}, {kind} {peak:.0f} MiB")


def main() -> None:
    """Run both parts (part 2 first)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=8)
    ap.add_argument("--eps", type=float, default=0.02, help="L-inf radius for the digits boxes")
    ap.add_argument("--cifar-eps", type=float, default=0.1 / 255)
    ap.add_argument("--cifar-boxes", type=int, default=1, help="0 skips part 2")
    ap.add_argument("--chunk", type=int, default=None, help="rows per back-substitution (default: per device)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cifar_boxes > 0:  # first: the CPU peak is the process's RSS high-water mark, which part 1 would raise
        cifar(args.cifar_boxes, args.cifar_eps, args.chunk)
    dense_vs_graph(args.boxes, args.eps)


if __name__ == "__main__":
    main()
