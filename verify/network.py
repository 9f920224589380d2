"""A small layer IR for verification: affine layers with an activation (ReLU, Sigmoid or Tanh) between them.

Every supported network (torch module or ONNX graph) is reduced to
``x -> W_1 x + b_1 -> ReLU -> ... -> W_L h + b_L`` on the flattened input. Consecutive
affine operations (normalisation, Conv, BatchNorm, Flatten, Linear) are composed into one
dense matrix, so BatchNorm is folded into the previous layer automatically. Weights are
kept in float64: the bounds and the SMT encoding reason about the exact real-valued
network those weights define (float32 weights are exactly representable in float64).
Non-affine pooling and skip connections are rewritten into affine + ReLU layers by the
importers (:mod:`verify.layer_cut`); Sigmoid/Tanh layers are bounded by linear relaxations
only, so a network with them is never handed to the exact (piecewise-linear) Z3 encoding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rbl_core.onnx.errors import ModelSourceError


class UnsupportedOperationError(ModelSourceError):
    """Raised when a network contains an operation the verifier cannot encode (a user error: one line, exit 2)."""


ACTIVATIONS = ("relu", "sigmoid", "tanh")
_NUMPY_ACT = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh,
              # exp of a non-positive argument only: no overflow warnings for large |z|
              "sigmoid": lambda z: np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                                            np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))}


def apply_activation(name: str, z: np.ndarray) -> np.ndarray:
    """The activation ``name`` (one of ACTIVATIONS) applied elementwise in float64."""
    return _NUMPY_ACT[name](z)


@dataclass
class Network:
    """Affine layers ``weights[i] @ h + biases[i]``; ``nonlinearities[i]`` (default ReLU) after every layer but the last."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input_shape: tuple[int, ...] = ()
    name: str = "network"
    meta: dict = field(default_factory=dict)
    nonlinearities: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("Network needs the same non-zero number of weights and biases")
        self.weights = [np.ascontiguousarray(w, dtype=np.float64) for w in self.weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float64).reshape(-1) for b in self.biases]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.ndim != 2 or w.shape[0] != b.shape[0]:
                raise ValueError(f"layer {i}: weight shape {w.shape} does not match bias shape {b.shape}")
            if i and w.shape[1] != self.weights[i - 1].shape[0]:
                raise ValueError(
                    f"layer {i}: expects {w.shape[1]} inputs but layer {i - 1} has {self.weights[i - 1].shape[0]} outputs")
        self.nonlinearities = list(self.nonlinearities) if self.nonlinearities is not None else \
            ["relu"] * (len(self.weights) - 1)
        if len(self.nonlinearities) != len(self.weights) - 1 or set(self.nonlinearities) - set(ACTIVATIONS):
            raise ValueError(f"nonlinearities must be {len(self.weights) - 1} of {ACTIVATIONS}, "
                             f"got {self.nonlinearities}")
        if not self.input_shape:
            self.input_shape = (self.input_dim,)
        if int(np.prod(self.input_shape)) != self.input_dim:
            raise ValueError(f"input_shape {self.input_shape} does not have {self.input_dim} elements")

    @property
    def input_dim(self) -> int:
        """Number of (flattened) inputs."""
        return self.weights[0].shape[1]

    @property
    def output_dim(self) -> int:
        """Number of outputs."""
        return self.weights[-1].shape[0]

    @property
    def num_layers(self) -> int:
        """Number of affine layers (hidden ReLU layers + 1)."""
        return len(self.weights)

    @property
    def piecewise_linear(self) -> bool:
        """True iff every activation is a ReLU (then the exact Z3 encoding and ReLU splitting apply)."""
        return all(a == "relu" for a in self.nonlinearities)

    @property
    def hidden_sizes(self) -> list[int]:
        """Widths of the ReLU layers."""
        return [w.shape[0] for w in self.weights[:-1]]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Concrete float64 forward pass on ``(B, input_dim)`` (or one flat input)."""
        h = np.asarray(x, dtype=np.float64)
        single = h.ndim == 1
        h = h.reshape(1, -1) if single else h.reshape(h.shape[0], -1)
        if h.shape[1] != self.input_dim:
            raise ValueError(f"input has {h.shape[1]} features, network expects {self.input_dim}")
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < self.num_layers - 1:
                h = apply_activation(self.nonlinearities[i], h)
        return h[0] if single else h

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Pre-activation values of every layer for a batch ``(B, input_dim)``."""
        h = np.asarray(x, dtype=np.float64).reshape(-1, self.input_dim)
        pre = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = h @ w.T + b
            pre.append(z)
            h = apply_activation(self.nonlinearities[i], z) if i < self.num_layers - 1 else z
        return pre

    def suffix(self, start: int) -> "Network":
        """The sub-network that maps post-ReLU layer ``start`` (1-based hidden layer) to the output."""
        if not 0 <= start < self.num_layers:
            raise ValueError(f"start layer {start} outside 0..{self.num_layers - 1}")
        shape = self.input_shape if start == 0 else (self.weights[start].shape[1],)
        return Network(self.weights[start:], self.biases[start:], shape, f"{self.name}[{start}:]",
                       nonlinearities=self.nonlinearities[start:])

    def to_torch(self):
        """A float64 ``torch.nn.Sequential`` computing the same function (for gradients / PGD)."""
        import torch
        from torch import nn

        mods: list[nn.Module] = [nn.Flatten()]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[0]).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if i < self.num_layers - 1:
                mods.append({"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[self.nonlinearities[i]]())
        return nn.Sequential(*mods).eval()


def random_relu_network(sizes: list[int], seed: int = 0, scale: float = 1.0) -> Network:
    """A random ReLU MLP with layer widths ``sizes`` (input first), for tests and benchmarks."""
    rng = np.random.default_rng(seed)
    ws, bs = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        ws.append(rng.normal(0.0, scale / np.sqrt(n_in), size=(n_out, n_in)))
        bs.append(rng.normal(0.0, 0.1 * scale, size=n_out))
    return Network(ws, bs, (sizes[0],), f"random{sizes}_s{seed}")
