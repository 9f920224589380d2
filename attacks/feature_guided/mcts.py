"""Monte Carlo tree search over the feature-guided game, anytime (Wicker et al., TACAS 2018; DeepGame upperbound).

Player I nodes choose a feature, player II nodes a pixel manipulation in it. Each iteration: UCB selection down the
tree (exploitation (visits / cost) * d as in DeepGame, exploration sqrt(2) * sqrt(ln N / n), argmax rather than
DeepGame's sampling proportional to the scores), expansion of all children, ``playouts_per_node`` random playouts
per new child (the child's value is the smallest value they reach), and backpropagation (cost += value,
visits += 1). After ``iterations_per_move`` iterations the root advances to its best child (DeepGame's per-level
budget, counted in iterations so runs are reproducible).

Two additions, both fed only by probabilities the oracle already returned (see docs/feature_guided.md):
a play that fails is worth d * (1 + share of the log-probability margin left) instead of a flat d, and player II's
children, which are queried once on expansion to find terminal ones, get a progressive-bias term
``prior_weight * (1 - margin) / (1 + visits)`` (the maximiser uses ``margin``). Both keep every adversarial
example (value <= d) ahead of every failure.

Every adversarial state a playout reaches is a candidate; one that beats the best so far is pruned and kept, so the
best distance never increases; a final pass prunes the best few raw candidates again. Player II is cooperative
(minimises the distance, like player I), competitive (maximises it) or random (nature: uniform over its moves).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from attacks.feature_guided.game import FeatureGame, State

PLAYER2_TYPES = ("cooperative", "competitive", "random")


@dataclass(eq=False)
class Node:
    """A game-tree node; ``feature`` >= 0 marks a player II node (player I has chosen that feature)."""

    state: State
    feature: int = -1
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    cost: float = 0.0
    expanded: bool = False
    terminal_value: float | None = None  # set once the node ends the play (adversarial, over budget, no move)
    margin: float = 1.0  # share of the log-probability margin left at this state (set when player II moves here)

    @property
    def player(self) -> int:
        """1 if player I moves at this node, 2 if player II does."""
        return 2 if self.feature >= 0 else 1


@dataclass
class SearchResult:
    """Anytime outcome of one search: best adversarial state (None if none), its distance, and the trace."""

    best_state: State | None
    best_distance: float
    queries: int
    iterations: int
    time_s: float
    history: list[tuple[int, int, float]]  # (iteration, queries, best distance so far) after each iteration
    moves: int  # moves the root advanced


class FeatureGuidedMCTS:
    """MCTS with UCB selection on one ``FeatureGame``; call ``search()``."""

    def __init__(self, game: FeatureGame, *, player2: str = "cooperative", exploration: float = math.sqrt(2),
                 playouts_per_node: int = 1, iterations_per_move: int = 1, max_queries: int = 5000,
                 time_limit_s: float = 30.0, max_iterations: int | None = None, prune_during_search: bool = True,
                 final_candidates: int = 3, prior_weight: float = 1.0) -> None:
        if player2 not in PLAYER2_TYPES:
            raise ValueError(f"player2 must be one of {PLAYER2_TYPES}, got {player2!r}")
        if playouts_per_node < 1 or iterations_per_move < 1:
            raise ValueError("playouts_per_node and iterations_per_move must be >= 1")
        self.game, self.player2 = game, player2
        self.c, self.samples = float(exploration), int(playouts_per_node)
        self.iterations_per_move = int(iterations_per_move)
        self.max_queries, self.time_limit_s, self.max_iterations = int(max_queries), float(time_limit_s), max_iterations
        self.rng = game.rng
        self.prior_weight = float(prior_weight)
        self.prune_during_search, self.final_candidates = bool(prune_during_search), int(final_candidates)
        self.candidates: list[tuple[float, State]] = []  # the best raw adversarial states, for the final pass
        self.best_state: State | None = None
        self.best_distance = math.inf

    # ------------------------------------------------------------ selection
    def _ucb(self, parent: Node, child: Node, maximise: bool, exploration: float | None = None) -> float:
        d = self.game.budget
        c = self.c if exploration is None else exploration
        explore = c * math.sqrt(math.log(max(parent.visits, 1)) / max(child.visits, 1))
        # progressive bias from the one-step probabilities player II's children were queried with anyway:
        # it fades as 1 / (1 + visits), so the playout values decide in the long run
        bias = self.prior_weight * ((child.margin if maximise else 1.0 - child.margin) / (1 + child.visits))
        if maximise:
            return (child.cost / max(child.visits, 1)) / d + explore + bias
        return (child.visits / max(child.cost, 1e-12)) * d + explore + bias

    def _select_child(self, node: Node) -> Node:
        """UCB (argmax) for the minimiser and the maximiser; uniform for a random player II."""
        if node.player == 2 and self.player2 == "random":
            return node.children[int(self.rng.integers(len(node.children)))]
        maximise = node.player == 2 and self.player2 == "competitive"
        scores = [self._ucb(node, ch, maximise) for ch in node.children]
        return node.children[int(np.argmax(scores))]

    def _best_move(self, node: Node) -> Node:
        """The move actually played at the root: best value for the mover, a uniform draw for nature."""
        if node.player == 2 and self.player2 == "random":
            return node.children[int(self.rng.integers(len(node.children)))]
        maximise = node.player == 2 and self.player2 == "competitive"
        # the UCB score without its exploration term: DeepGame's visits / cost plus the fading prior
        scores = [self._ucb(node, ch, maximise, exploration=0.0) for ch in node.children]
        return node.children[int(np.argmax(scores))]

    # ------------------------------------------------------------ expansion
    def _expand(self, node: Node) -> list[Node]:
        """Create all children; player II children are queried once to mark the ones that end the play."""
        g = self.game
        node.expanded = True
        if node.player == 1:
            for k in range(g.features.num_features):
                if len(g.useful_actions(node.state, k)):
                    node.children.append(Node(state=node.state, feature=k, parent=node))
        else:
            acts = g.useful_actions(node.state, node.feature)
            states = [g.apply_action(node.state, node.feature, int(a)) for a in acts]
            dists = [g.distance(s) for s in states]
            within = [s for s, dd in zip(states, dists) if dd <= g.budget]
            probs = g.probs(np.stack([g.image(s) for s in within])) if within else np.zeros((0, 1))
            adv = probs.argmax(axis=1) != g.label if within else []
            margins = g.margin(probs) if within else []
            for s, a, mg in zip(within, adv, margins):
                child = Node(state=s, parent=node, margin=float(mg))
                if a:
                    child.terminal_value = g.distance(s)
                    self._offer(s)
                node.children.append(child)
        if not node.children:
            node.terminal_value = g.budget
        return node.children

    def _offer(self, state: State) -> None:
        """Anytime update: an adversarial state that beats the best so far (pruned first if so configured)."""
        raw = self.game.distance(state)
        self.candidates = sorted(self.candidates + [(raw, state)], key=lambda c: c[0])[: self.final_candidates]
        if raw >= self.best_distance:
            return
        pruned = self.game.prune(state) if self.prune_during_search else state
        dist = self.game.distance(pruned)
        if dist < self.best_distance:
            self.best_state, self.best_distance = pruned, dist

    @staticmethod
    def _backpropagate(node: Node | None, value: float) -> None:
        while node is not None:
            node.cost += value
            node.visits += 1
            node = node.parent

    # ----------------------------------------------------------------- main
    def _iterate(self, root: Node) -> None:
        node = root
        while node.expanded and node.children and node.terminal_value is None:
            node = self._select_child(node)
        if node.terminal_value is not None:
            self._backpropagate(node, node.terminal_value)
            return
        children = self._expand(node)
        if not children:
            self._backpropagate(node, node.terminal_value)
            return
        fresh = [ch for ch in children if ch.terminal_value is None]
        res = self.game.playouts([ch.state for ch in fresh for _ in range(self.samples)])
        for s in res.adversarial:
            if s is not None:
                self._offer(s)
        vals = res.values.reshape(len(fresh), self.samples).min(axis=1) if fresh else []
        for ch, v in zip(fresh, vals):
            self._backpropagate(ch, float(v))
        for ch in children:
            if ch.terminal_value is not None:
                self._backpropagate(ch, ch.terminal_value)

    def search(self) -> SearchResult:
        """Run MCTS until the root ends the play or the query/time/iteration budget is spent."""
        g, t0 = self.game, time.perf_counter()
        root = Node(state={})
        history: list[tuple[int, int, float]] = []
        it = moves = 0
        while root.terminal_value is None:
            for _ in range(self.iterations_per_move):
                self._iterate(root)
                it += 1
                history.append((it, g.queries, self.best_distance))
                if self._out_of_budget(it, t0) or root.terminal_value is not None:
                    break
            if self._out_of_budget(it, t0) or root.terminal_value is not None or not root.children:
                break
            root = self._best_move(root)
            root.parent = None  # the committed move is final: later values stop at the new root
            moves += 1
        self._final_pass()
        history.append((it, g.queries, self.best_distance))
        return SearchResult(best_state=self.best_state, best_distance=self.best_distance, queries=g.queries,
                            iterations=it, time_s=time.perf_counter() - t0, history=history, moves=moves)

    def _final_pass(self) -> None:
        """Remove manipulations the best adversarial examples do not need (the final scrutiny of the paper)."""
        pool = list(self.candidates)
        if self.best_state is not None:
            pool.append((self.best_distance, self.best_state))
        for _, state in pool:
            pruned = self.game.prune(state)
            dist = self.game.distance(pruned)
            if dist < self.best_distance or (dist == self.best_distance and self.best_state is not None
                                             and len(pruned) < len(self.best_state)):
                self.best_state, self.best_distance = pruned, dist

    def _out_of_budget(self, it: int, t0: float) -> bool:
        if self.max_iterations is not None and it >= self.max_iterations:
            return True
        return self.game.queries >= self.max_queries or time.perf_counter() - t0 >= self.time_limit_s
