"""Feature-guided black-box attack (Wicker, Huang, Kwiatkowska, TACAS 2018) as an L0/L1/L2 EvasionAttack.

Per image: SIFT features -> two-player game -> anytime MCTS -> the smallest adversarial example found, pruned.
The model is reached only through ``ProbabilityOracle`` (probabilities, every image counted); ``queries`` in the
result is the per-image count of oracle images, including the clean check.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks.base import AttackError, AttackResult, EvasionAttack
from attacks.black_box import ProbabilityOracle
from attacks.feature_guided.game import MANIPULATIONS, FeatureGame
from attacks.feature_guided.mcts import PLAYER2_TYPES, FeatureGuidedMCTS, SearchResult
from attacks.feature_guided.saliency import FeatureMap, extract_features
from rbl_core.threat import ThreatModel

# Distance budget d when the threat model is unbounded, relative to the image: L0 a share of the pixels,
# L1 a share of all elements, L2 a share of sqrt(elements).
DEFAULT_BUDGET = {"L0": 0.125, "L1": 0.03, "L2": 0.25}


@dataclass
class ImageOutcome:
    """What the attack found on one image (kept for figures, tests and the comparison task)."""

    x_adv: torch.Tensor
    success: bool
    queries: int
    distance: float
    search: SearchResult | None
    features: FeatureMap | None

    @property
    def queries_to_first(self) -> int | None:
        """Oracle queries until the first adversarial example was found (None if never)."""
        if self.search is None:
            return self.queries if self.success else None
        hit = next((q for _, q, best in self.search.history if best < math.inf), None)
        return None if hit is None else hit + 1  # + the clean check


class FeatureGuidedAttack(EvasionAttack):
    """SIFT-feature-guided two-player game solved by MCTS; black-box, minimises L0, L1 or L2."""

    norms = ("L0", "L1", "L2")
    default_budget = True  # see distance_budget

    def __init__(self, name: str = "feature_guided", player2: str = "cooperative", manipulation: str = "tau",
                 tau: float = 1.0, budget: float | None = None, upscale: int = 15, sigma_constant: float = 15.0,
                 max_keypoints: int | None = None, max_pixels_per_feature: int | None = 64,
                 playouts_per_node: int = 1, iterations_per_move: int = 1, exploration: float = math.sqrt(2),
                 max_queries: int = 5000, time_limit_s: float = 60.0, max_playout_depth: int = 10,
                 prior_weight: float = 1.0, final_candidates: int = 3, seed: int = 0) -> None:
        if player2 not in PLAYER2_TYPES:
            raise AttackError(f"feature_guided: player2 must be one of {PLAYER2_TYPES}, got {player2!r}")
        if manipulation not in MANIPULATIONS:
            raise AttackError(f"feature_guided: manipulation must be one of {MANIPULATIONS}, got {manipulation!r}")
        if budget is not None and budget <= 0:
            raise AttackError(f"feature_guided: budget must be > 0, got {budget}")
        if max_queries < 1 or time_limit_s <= 0:
            raise AttackError("feature_guided: max_queries must be >= 1 and time_limit_s > 0")
        self.name = name
        self.player2, self.manipulation, self.tau, self.budget = player2, manipulation, float(tau), budget
        self.upscale, self.sigma_constant, self.max_keypoints = int(upscale), float(sigma_constant), max_keypoints
        self.max_pixels_per_feature = max_pixels_per_feature
        self.playouts_per_node, self.iterations_per_move = int(playouts_per_node), int(iterations_per_move)
        self.exploration = float(exploration)
        self.max_queries, self.time_limit_s = int(max_queries), float(time_limit_s)
        self.max_playout_depth, self.seed = int(max_playout_depth), int(seed)
        self.prior_weight, self.final_candidates = float(prior_weight), int(final_candidates)

    def distance_budget(self, threat: ThreatModel, shape: tuple[int, ...]) -> float:
        """The game's budget d: ``threat.eps`` if set, else ``budget``, else a default share of the image."""
        if threat.eps is not None:
            return float(threat.eps)
        if self.budget is not None:
            return float(self.budget)
        c, h, w = shape
        share = DEFAULT_BUDGET[threat.norm.value]
        if threat.norm.value == "L0":
            return max(1.0, round(share * h * w))
        if threat.norm.value == "L1":
            return share * c * h * w
        return share * math.sqrt(c * h * w)

    def attack_one(self, oracle: ProbabilityOracle, x: torch.Tensor, y: int, norm: str, budget: float) -> ImageOutcome:
        """Run the game on one (C, H, W) image; returns the best adversarial example (or x) and its cost."""
        start = oracle.queries
        clean = oracle(x[None])[0]
        if int(clean.argmax()) != y:
            return ImageOutcome(x.clone(), True, oracle.queries - start, 0.0, None, None)
        img = x.detach().cpu().numpy().astype(np.float32)
        # seeded by the image itself, so a result does not depend on the batch an image lands in
        rng = np.random.default_rng([self.seed, zlib.crc32(img.tobytes())])
        features = extract_features(img, upscale=self.upscale, sigma_constant=self.sigma_constant,
                                    max_keypoints=self.max_keypoints)
        game = FeatureGame(img, y, features, oracle, norm=norm, budget=budget, manipulation=self.manipulation,
                           tau=self.tau, max_pixels_per_feature=self.max_pixels_per_feature,
                           max_playout_depth=self.max_playout_depth, rng=rng, clean_probs=clean.cpu().numpy())
        mcts = FeatureGuidedMCTS(game, player2=self.player2, exploration=self.exploration,
                                 playouts_per_node=self.playouts_per_node, iterations_per_move=self.iterations_per_move,
                                 max_queries=max(self.max_queries - 1, 1), time_limit_s=self.time_limit_s,
                                 prior_weight=self.prior_weight, final_candidates=self.final_candidates)
        result = mcts.search()
        if result.best_state is None:
            return ImageOutcome(x.clone(), False, oracle.queries - start, math.inf, result, features)
        x_adv = torch.from_numpy(game.image(result.best_state)).to(x.device, x.dtype)
        return ImageOutcome(x_adv, True, oracle.queries - start, result.best_distance, result, features)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> AttackResult:
        """Attack every image of the batch independently; the model is used only through a ProbabilityOracle."""
        oracle = ProbabilityOracle(model)
        budget = self.distance_budget(threat, tuple(x.shape[1:]))
        outs = [self.attack_one(oracle, x[i], int(y[i]), threat.norm.value, budget) for i in range(x.shape[0])]
        x_adv = torch.stack([o.x_adv for o in outs]) if outs else x.clone()
        return AttackResult(x_adv, torch.tensor([o.success for o in outs], dtype=torch.bool, device=x.device),
                            torch.tensor([o.queries for o in outs], dtype=torch.long, device=x.device), details=outs)
