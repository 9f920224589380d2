"""Direct encoding for fooling images: the genome is the image itself, one float in [0, 1] per pixel.

Variation follows the sferes `evo_float` genotype of the reference code: Deb's polynomial mutation
(each gene with probability `mutation_rate`, distribution index eta_m) and simulated binary
crossover (SBX, distribution index eta_c, each gene recombined with probability 0.5).
"""
from __future__ import annotations

import numpy as np
import torch
from attacks.base import AttackError


def polynomial_mutation(x: np.ndarray, rate: float, eta: float, rng: np.random.Generator,
                        low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Deb's polynomial mutation of each gene with probability `rate`, clipped to [low, high]."""
    mask = rng.random(x.shape) < rate
    r = rng.random(x.shape)
    power = 1.0 / (eta + 1.0)
    delta = np.where(r < 0.5, (2.0 * r) ** power - 1.0, 1.0 - (2.0 * (1.0 - r)) ** power)
    return np.clip(np.where(mask, x + delta * (high - low), x), low, high)


def sbx_crossover(a: np.ndarray, b: np.ndarray, eta: float, rng: np.random.Generator,
                  low: float = 0.0, high: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Simulated binary crossover of two equally shaped parent arrays; each gene swapped-blended w.p. 0.5."""
    u = rng.random(a.shape)
    beta = np.where(u <= 0.5, (2.0 * u) ** (1.0 / (eta + 1.0)),
                    (1.0 / (2.0 * (1.0 - u))) ** (1.0 / (eta + 1.0)))
    c1 = 0.5 * ((1.0 + beta) * a + (1.0 - beta) * b)
    c2 = 0.5 * ((1.0 - beta) * a + (1.0 + beta) * b)
    active = rng.random(a.shape) < 0.5
    c1 = np.where(active, c1, a)
    c2 = np.where(active, c2, b)
    return np.clip(c1, low, high), np.clip(c2, low, high)


class DirectEncoding:
    """Genome = flat pixel vector in [0, 1]; initial pixels U(0, 1)."""

    name = "direct"

    def __init__(self, image_shape: tuple[int, int, int], mutation_rate: float = 0.1,
                 eta_m: float = 15.0, eta_c: float = 10.0):
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise AttackError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
        if not 0.0 < mutation_rate <= 1.0:
            raise AttackError(f"mutation_rate must lie in (0, 1], got {mutation_rate}")
        if eta_m <= 0 or eta_c <= 0:
            raise AttackError(f"eta_m and eta_c must be positive, got {eta_m}, {eta_c}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.size = int(np.prod(self.image_shape))
        self.mutation_rate, self.eta_m, self.eta_c = mutation_rate, eta_m, eta_c

    def random(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """n genomes with pixels drawn U(0, 1)."""
        return list(rng.random((n, self.size)))

    def crossover(self, a: list[np.ndarray], b: list[np.ndarray],
                  rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """SBX on each parent pair."""
        c1, c2 = sbx_crossover(np.stack(a), np.stack(b), self.eta_c, rng)
        return list(c1), list(c2)

    def mutate(self, genomes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """Polynomial mutation of every genome (returns new arrays; parents stay untouched)."""
        return list(polynomial_mutation(np.stack(genomes), self.mutation_rate, self.eta_m, rng))

    def render(self, genomes: list[np.ndarray]) -> torch.Tensor:
        """Float32 image batch (N, C, H, W)."""
        return torch.from_numpy(np.stack(genomes).astype(np.float32)).reshape(-1, *self.image_shape)
