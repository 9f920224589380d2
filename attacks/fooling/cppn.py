"""CPPN (compositional pattern-producing network) encoding for fooling images.

A CPPN maps each pixel's (x, y, d = distance to the centre, bias) to an intensity (grey) or to
HLS colour channels. Nodes use sine, sigmoid, Gaussian or linear activations. Genomes start
with inputs wired straight to the outputs (no hidden node) and grow by topology mutations with the
reference MNIST rates: add connection 0.5, delete connection 0.3, change connection 0.5, add
neuron 0.5, delete neuron 0.2; weights in [-10, 10] get polynomial mutation (rate 0.1, eta 15),
activations are resampled with rate 0.1.

Acyclicity is kept by giving every node a depth (inputs 0, outputs 1, a split node the mean of
its ends) and allowing connections only from lower to higher depth; nodes evaluate in depth order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from attacks.fooling.direct_encoding import polynomial_mutation
from attacks.base import AttackError
from rbl_core.config import PROBABILITY, ranged

ACTIVATIONS: tuple[str, ...] = ("sine", "sigmoid", "gaussian", "linear")
NUM_INPUTS = 4          # x, y, d, bias
WEIGHT_RANGE = 10.0     # weights live in [-10, 10]; genes in [0, 1] are mapped linearly


def activate(kind: int, s: np.ndarray) -> np.ndarray:
    """Apply activation number `kind`; the bounded ones are bipolar so they all span [-1, 1]."""
    name = ACTIVATIONS[kind]
    if name == "sine":
        return np.sin(s)
    if name == "sigmoid":
        return 2.0 / (1.0 + np.exp(-np.clip(s, -60.0, 60.0))) - 1.0
    if name == "gaussian":
        return 2.0 * np.exp(-np.minimum(s * s, 700.0)) - 1.0
    return s


@dataclass
class CPPNGenome:
    """Nodes (id -> depth, id -> activation) and weighted connections (src, dst) -> gene in [0, 1]."""

    num_outputs: int
    depth: dict[int, float]
    activation: dict[int, int]
    connections: dict[tuple[int, int], float]
    next_id: int

    def copy(self) -> "CPPNGenome":
        """Independent copy (mutation never touches the parent)."""
        return CPPNGenome(self.num_outputs, dict(self.depth), dict(self.activation),
                          dict(self.connections), self.next_id)

    @property
    def outputs(self) -> list[int]:
        return list(range(NUM_INPUTS, NUM_INPUTS + self.num_outputs))

    @property
    def hidden(self) -> list[int]:
        return [n for n in self.depth if n >= NUM_INPUTS + self.num_outputs]

    def num_nodes(self) -> int:
        return len(self.depth)


@dataclass
class CPPNMutationRates:
    """Per-child probabilities of each structural mutation, plus per-gene rates."""

    add_connection: float = ranged(0.5, **PROBABILITY)
    delete_connection: float = ranged(0.3, **PROBABILITY)
    change_connection: float = ranged(0.5, **PROBABILITY)
    add_neuron: float = ranged(0.5, **PROBABILITY)
    delete_neuron: float = ranged(0.2, **PROBABILITY)
    weight: float = ranged(0.1, **PROBABILITY)       # per-weight polynomial mutation probability (weights in [-10, 10])
    weight_eta: float = ranged(15.0, ge=0)           # its distribution index
    activation: float = ranged(0.1, **PROBABILITY)   # per-node activation resampling probability


def hls_to_rgb(h: np.ndarray, l: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Vectorised colorsys.hls_to_rgb for arrays in [0, 1]; returns (3, ...)."""
    m2 = np.where(l <= 0.5, l * (1.0 + s), l + s - l * s)
    m1 = 2.0 * l - m2

    def channel(hue: np.ndarray) -> np.ndarray:
        hue = hue % 1.0
        return np.select([hue < 1 / 6, hue < 0.5, hue < 2 / 3],
                         [m1 + (m2 - m1) * hue * 6.0, m2, m1 + (m2 - m1) * (2 / 3 - hue) * 6.0], m1)

    return np.stack([channel(h + 1 / 3), channel(h), channel(h - 1 / 3)])


@dataclass
class CPPNEncoding:
    """Grey (1 output) or colour (3 outputs read as H, L, S) CPPN images of a fixed size."""

    image_shape: tuple[int, int, int]
    rates: CPPNMutationRates = field(default_factory=CPPNMutationRates)
    name: str = "cppn"

    def __post_init__(self) -> None:
        if len(self.image_shape) != 3 or self.image_shape[0] not in (1, 3) or min(self.image_shape) < 1:
            raise AttackError(f"CPPN image_shape must be (1|3, H, W), got {self.image_shape}")
        self.image_shape = tuple(int(s) for s in self.image_shape)
        _, h, w = self.image_shape
        ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing="ij")
        d = np.sqrt(xs ** 2 + ys ** 2)
        self._inputs = [xs.ravel(), ys.ravel(), d.ravel(), np.ones(h * w)]

    @property
    def num_outputs(self) -> int:
        return self.image_shape[0]

    # ------------------------------------------------------------------ creation and variation
    def random(self, n: int, rng: np.random.Generator) -> list[CPPNGenome]:
        """Minimal genomes: every input wired to every output with a random weight, no hidden node."""
        out: list[CPPNGenome] = []
        outputs = range(NUM_INPUTS, NUM_INPUTS + self.num_outputs)
        for _ in range(n):
            depth = {i: 0.0 for i in range(NUM_INPUTS)} | {o: 1.0 for o in outputs}
            act = {o: int(rng.integers(len(ACTIVATIONS))) for o in outputs}
            conns = {(i, o): float(rng.random()) for i in range(NUM_INPUTS) for o in outputs}
            out.append(CPPNGenome(self.num_outputs, depth, act, conns, NUM_INPUTS + self.num_outputs))
        return out

    def crossover(self, a: list[CPPNGenome], b: list[CPPNGenome],
                  rng: np.random.Generator) -> tuple[list[CPPNGenome], list[CPPNGenome]]:
        """CPPN topologies are not recombined (as in the reference MNIST CPPN runs): copies."""
        return [g.copy() for g in a], [g.copy() for g in b]

    def mutate(self, genomes: list[CPPNGenome], rng: np.random.Generator) -> list[CPPNGenome]:
        """Apply topology, weight and activation mutations to copies of the genomes."""
        return [self._mutate_one(g.copy(), rng) for g in genomes]

    def _mutate_one(self, g: CPPNGenome, rng: np.random.Generator) -> CPPNGenome:
        r = self.rates
        if rng.random() < r.add_connection:
            self._add_connection(g, rng)
        if rng.random() < r.delete_connection and g.connections:
            keys = list(g.connections)
            del g.connections[keys[rng.integers(len(keys))]]
        if rng.random() < r.change_connection and g.connections:
            self._change_connection(g, rng)
        if rng.random() < r.add_neuron and g.connections:
            self._add_neuron(g, rng)
        if rng.random() < r.delete_neuron and g.hidden:
            hidden = g.hidden
            node = hidden[rng.integers(len(hidden))]
            del g.depth[node], g.activation[node]
            g.connections = {k: v for k, v in g.connections.items() if node not in k}
        if g.connections:
            keys = list(g.connections)
            genes = polynomial_mutation(np.array([g.connections[k] for k in keys]), r.weight, r.weight_eta, rng)
            g.connections = dict(zip(keys, genes.tolist()))
        for node in g.activation:
            if rng.random() < r.activation:
                g.activation[node] = int(rng.integers(len(ACTIVATIONS)))
        return g

    @staticmethod
    def _valid_pairs(g: CPPNGenome) -> list[tuple[int, int]]:
        nodes = list(g.depth)
        return [(s, d) for s in nodes for d in nodes
                if d >= NUM_INPUTS and g.depth[s] < g.depth[d] and (s, d) not in g.connections]

    def _add_connection(self, g: CPPNGenome, rng: np.random.Generator) -> None:
        pairs = self._valid_pairs(g)
        if pairs:
            g.connections[pairs[rng.integers(len(pairs))]] = float(rng.random())

    def _change_connection(self, g: CPPNGenome, rng: np.random.Generator) -> None:
        """Rewire one end (source or target) of a random connection, keeping its weight."""
        keys = list(g.connections)
        src, dst = keys[rng.integers(len(keys))]
        nodes = list(g.depth)
        if rng.random() < 0.5:
            options = [s for s in nodes if g.depth[s] < g.depth[dst] and (s, dst) not in g.connections]
            new = (options[rng.integers(len(options))], dst) if options else None
        else:
            options = [d for d in nodes if d >= NUM_INPUTS and g.depth[src] < g.depth[d]
                       and (src, d) not in g.connections]
            new = (src, options[rng.integers(len(options))]) if options else None
        if new is not None:
            g.connections[new] = g.connections.pop((src, dst))

    def _add_neuron(self, g: CPPNGenome, rng: np.random.Generator) -> None:
        """Split a random connection src->dst into src->new->dst with a random activation."""
        keys = list(g.connections)
        src, dst = keys[rng.integers(len(keys))]
        weight = g.connections.pop((src, dst))
        node = g.next_id
        g.next_id += 1
        g.depth[node] = 0.5 * (g.depth[src] + g.depth[dst])
        g.activation[node] = int(rng.integers(len(ACTIVATIONS)))
        g.connections[(src, node)] = float(rng.random())
        g.connections[(node, dst)] = weight

    # ------------------------------------------------------------------ phenotype
    def evaluate_outputs(self, g: CPPNGenome) -> np.ndarray:
        """Raw output-node values per pixel, shape (num_outputs, H*W)."""
        values: dict[int, np.ndarray] = dict(enumerate(self._inputs))
        incoming: dict[int, list[tuple[int, float]]] = {}
        for (s, d), gene in g.connections.items():
            incoming.setdefault(d, []).append((s, (2.0 * gene - 1.0) * WEIGHT_RANGE))
        zero = np.zeros_like(self._inputs[0])
        for node in sorted((n for n in g.depth if n >= NUM_INPUTS), key=lambda n: (g.depth[n], n)):
            total = zero
            for s, w in incoming.get(node, ()):
                total = total + w * values[s]
            values[node] = activate(g.activation[node], total)
        return np.stack([values[o] for o in g.outputs])

    def render(self, genomes: list[CPPNGenome]) -> torch.Tensor:
        """Float32 image batch (N, C, H, W) in [0, 1]."""
        _, h, w = self.image_shape
        images = []
        for g in genomes:
            out = np.clip((self.evaluate_outputs(g) + 1.0) * 0.5, 0.0, 1.0)
            if self.num_outputs == 3:
                out = hls_to_rgb(out[0], out[1], out[2])
            images.append(out.reshape(self.num_outputs, h, w))
        return torch.from_numpy(np.stack(images).astype(np.float32))
