"""The two-player game of the feature-guided attack on one image (Wicker et al., TACAS 2018, section 4).

Player I picks a feature (a SIFT keypoint's Gaussian partition); player II picks an atomic manipulation of one
pixel inside it: +tau or -tau on one channel (DeepGame), or every channel of the pixel to its far extreme (SafeCV's
``max_manip``). A state is the set of manipulated elements ``{flat CHW index: new value}``. A play ends when the
class changes, when the distance exceeds the budget ``d``, or when no move is left. The model is reached only
through a probability oracle; every image sent to it counts as one query.

Unlike DeepGame, values are clipped to the valid range with a correct ``np.clip(v, 0, 1)`` (DeepGame swaps the
bounds and sets every manipulated pixel to the image minimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from attacks.feature_guided.saliency import FeatureMap

NORMS = ("L0", "L1", "L2")
MANIPULATIONS = ("tau", "extreme")
State = dict[int, float]


@dataclass(frozen=True)
class Playouts:
    """Outcome of a batch of random playouts: per playout its value and the adversarial state it reached."""

    values: np.ndarray  # (P,) distance of the adversarial state found, or the budget d when none was found
    adversarial: list[State | None]


class FeatureGame:
    """Moves, distances and model queries of the feature-guided game on one (C, H, W) image in [0, 1]."""

    def __init__(self, image: np.ndarray, label: int, features: FeatureMap,
                 oracle: Callable[[torch.Tensor], torch.Tensor], *, norm: str = "L0", budget: float = 40.0,
                 manipulation: str = "tau", tau: float = 1.0, max_pixels_per_feature: int | None = 64,
                 max_playout_depth: int = 10, failure_margin: bool = True,
                 rng: np.random.Generator | None = None, clean_probs: np.ndarray | None = None) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS} for the feature-guided game, got {norm!r}")
        if manipulation not in MANIPULATIONS:
            raise ValueError(f"manipulation must be one of {MANIPULATIONS}, got {manipulation!r}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {tau}")
        if budget <= 0:
            raise ValueError(f"distance budget must be > 0, got {budget}")
        self.x0 = np.asarray(image, dtype=np.float32)
        self.flat0 = self.x0.ravel()
        self.c, self.h, self.w = self.x0.shape
        self.hw = self.h * self.w
        self.label = int(label)
        self.features = features
        self.oracle = oracle
        self.norm, self.budget, self.tau = norm, float(budget), float(tau)
        self.max_playout_depth = int(max_playout_depth)
        self.failure_margin = bool(failure_margin)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.queries = 0
        self._build_actions(manipulation, max_pixels_per_feature)
        # the clean image's margin is the scale of every later margin (one query unless the caller has it)
        p0 = self.probs(self.x0[None]) if clean_probs is None else np.asarray(clean_probs, dtype=np.float64)[None]
        self._root_margin = max(float(self.log_margin(p0)[0]), 1e-6)

    def log_margin(self, p: np.ndarray) -> np.ndarray:
        """log p(label) - log max p(other): > 0 while correctly classified (read from probabilities only)."""
        lp = np.log(np.clip(p.astype(np.float64), 1e-38, None))
        return lp[:, self.label] - np.delete(lp, self.label, axis=1).max(axis=1)

    def margin(self, p: np.ndarray) -> np.ndarray:
        """Share of the original image's log-probability margin that is left, clipped to [0, 1].

        Softmax probabilities of a confident model saturate at 1, so p(label) - max p(other) carries no
        signal; the log-ratio does, and is still computed from the probabilities the oracle returns.
        """
        return np.clip(self.log_margin(p) / self._root_margin, 0.0, 1.0)

    # ----------------------------------------------------------------- moves
    def _build_actions(self, manipulation: str, max_pixels: int | None) -> None:
        """Atomic manipulations of every feature: arrays elems (A, m), vals (A, m), weight (A,)."""
        self.elems: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.weight: list[np.ndarray] = []
        pdf = self.features.pixel_weight.ravel()
        for k in range(self.features.num_features):
            pix = self.features.pixels(k)
            if max_pixels is not None and len(pix) > max_pixels:
                # DeepGame caps pixels per keypoint at random; keeping the keypoint's core (highest pdf) is stabler
                pix = pix[np.argsort(-pdf[pix], kind="stable")[:max_pixels]]
            el, va, we = [], [], []
            for p in pix:
                if manipulation == "tau":
                    for ch in range(self.c):
                        e = ch * self.hw + p
                        for sign in (1.0, -1.0):
                            v = float(np.clip(self.flat0[e] + sign * self.tau, 0.0, 1.0))
                            if v != self.flat0[e]:
                                el.append([e]), va.append([v]), we.append(pdf[p])
                else:
                    es = [ch * self.hw + p for ch in range(self.c)]
                    vs = [1.0 if self.flat0[e] < 0.5 else 0.0 for e in es]
                    el.append(es), va.append(vs), we.append(pdf[p])
            m = 1 if manipulation == "tau" else self.c
            self.elems.append(np.asarray(el, dtype=np.int64).reshape(-1, m))
            self.vals.append(np.asarray(va, dtype=np.float32).reshape(-1, m))
            self.weight.append(np.asarray(we, dtype=np.float64))
        self.playable = np.array([len(e) > 0 for e in self.elems])
        if not self.playable.any():
            raise ValueError("the image offers no manipulation (every feature is empty)")
        self._prepare_playouts()

    def useful_actions(self, state: State, k: int) -> np.ndarray:
        """Indices of feature ``k``'s actions that change ``state`` (player II's legal moves)."""
        el, va = self.elems[k], self.vals[k]
        if len(el) == 0:
            return np.zeros(0, dtype=np.int64)
        cur = self.flat0[el].copy()
        if state:
            for i, e in np.ndenumerate(el):
                if int(e) in state:
                    cur[i] = state[int(e)]
        return np.flatnonzero(np.any(cur != va, axis=1))

    def apply_action(self, state: State, k: int, a: int) -> State:
        """New state with action ``a`` of feature ``k`` applied (later manipulations overwrite earlier ones)."""
        new = dict(state)
        for e, v in zip(self.elems[k][a].tolist(), self.vals[k][a].tolist()):
            if v == self.flat0[e]:
                new.pop(e, None)
            else:
                new[e] = v
        return new

    def image(self, state: State) -> np.ndarray:
        """The (C, H, W) image of a state."""
        flat = self.flat0.copy()
        if state:
            flat[np.fromiter(state.keys(), np.int64)] = np.fromiter(state.values(), np.float32)
        return flat.reshape(self.x0.shape)

    def distance(self, state: State) -> float:
        """Distance of a state to the original image: L0 counts changed pixels (any channel), L1/L2 all elements."""
        if not state:
            return 0.0
        e = np.fromiter(state.keys(), np.int64)
        d = np.fromiter(state.values(), np.float64) - self.flat0[e]
        if self.norm == "L0":
            return float(len(np.unique(e[d != 0] % self.hw)))
        if self.norm == "L1":
            return float(np.abs(d).sum())
        return float(np.sqrt((d * d).sum()))

    # --------------------------------------------------------------- queries
    def probs(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of (B, C, H, W) images, through the oracle; counts B queries."""
        if len(images) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        self.queries += len(images)
        out = self.oracle(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
        return out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    def adversarial(self, states: list[State]) -> np.ndarray:
        """Whether each state is misclassified (untargeted: top class differs from the label)."""
        if not states:
            return np.zeros(0, dtype=bool)
        p = self.probs(np.stack([self.image(s) for s in states]))
        return p.argmax(axis=1) != self.label

    # -------------------------------------------------------------- playouts
    def _prepare_playouts(self) -> None:
        """Flat per-action tables that the vectorised playouts index into."""
        self._feat_of = np.concatenate([np.full(len(e), k) for k, e in enumerate(self.elems)])
        self._logw = np.log(np.concatenate(self.weight) + 1e-300)
        self._offset = np.cumsum([0] + [len(e) for e in self.elems])
        allel = [tuple(int(v) for v in row) for e in self.elems for row in e]
        d = [self.vals[k].astype(np.float64) - self.flat0[self.elems[k]] for k in range(len(self.elems))]
        d = np.concatenate([x for x in d if len(x)]) if any(len(x) for x in d) else np.zeros((0, 1))
        self._act_elems = allel
        self._act_values = [tuple(float(v) for v in row) for vv in self.vals for row in vv]
        self._act_pixel = [row[0] % self.hw for row in allel]
        self._act_l1_arr = np.abs(d).sum(axis=1)
        self._act_sq_arr = (d * d).sum(axis=1)
        self._act_pixel_arr = np.asarray(self._act_pixel, dtype=np.int64)
        # an action's first element identifies it for collisions: tau actions touch one element, extreme
        # actions every channel of one pixel (so channel 0 stands for the pixel)
        self._act_first_elem = np.asarray([row[0] for row in allel], dtype=np.int64)

    def _trajectories(self, states: list[State]) -> list[tuple[list[int], list[float]]]:
        """Random plays from ``states``: features by saliency, pixels by their keypoint's Gaussian.

        Vectorised over plays. Within a feature, a Gumbel-perturbed sort of log pdf gives the order in which the
        keypoint's Gaussian would draw its pixels without replacement. Features take turns as competing
        exponential clocks with rates P(feature), which is the same as drawing the next feature from the
        saliency renormalised over the features not yet exhausted. A move touching an element that is already
        manipulated is skipped. Each play stops before the move that would exceed the budget, or after
        ``max_playout_depth`` moves. Returns, per play, (global action ids, distance after each move).
        """
        p_n, a_n = len(states), len(self._logw)
        if p_n == 0:
            return []
        rng = self.rng
        feat = self._feat_of
        sal = np.maximum(self.features.saliency[feat], 1e-12)
        keys = np.clip(self._logw[None, :] + rng.gumbel(size=(p_n, a_n)), -1e3, 1e3)
        srt = np.argsort(feat[None, :] * 1e4 - keys, axis=1, kind="stable")  # grouped by feature, best first
        f_sorted = feat[srt]
        ticks = rng.exponential(size=(p_n, a_n)) / sal[srt]
        csum = np.cumsum(ticks, axis=1)
        start = self._offset[:-1][f_sorted]  # segment start of each position's feature
        base = np.where(start > 0, np.take_along_axis(csum, np.maximum(start - 1, 0), axis=1), 0.0)
        times = csum - base
        seq = np.take_along_axis(srt, np.argsort(times, axis=1, kind="stable"), axis=1)  # (P, A) action ids
        # validity: skip elements already manipulated in the state or earlier in this play
        n_el = self.flat0.size
        first_el = self._act_first_elem[seq]  # (P, A)
        in_state = np.zeros((p_n, n_el), dtype=bool)
        base_pix = np.zeros(p_n)
        base_l1 = np.zeros(p_n)
        base_sq = np.zeros(p_n)
        pix_in_state = np.zeros((p_n, self.hw), dtype=bool)
        for j, st in enumerate(states):
            if st:
                e = np.fromiter(st.keys(), np.int64)
                d = np.fromiter(st.values(), np.float64) - self.flat0[e]
                in_state[j, e] = True
                pix_in_state[j, e[d != 0] % self.hw] = True
                base_l1[j], base_sq[j] = np.abs(d).sum(), (d * d).sum()
        base_pix = pix_in_state.sum(axis=1)
        rows = np.arange(p_n)[:, None]
        pos = np.broadcast_to(np.arange(a_n), (p_n, a_n))
        first_pos = np.full((p_n, n_el), a_n, dtype=np.int64)
        np.minimum.at(first_pos, (np.broadcast_to(rows, (p_n, a_n)), first_el), pos)
        valid = (first_pos[rows, first_el] == pos) & ~in_state[rows, first_el]
        pix = self._act_pixel_arr[seq]
        if self.norm == "L0":
            first_pix = np.full((p_n, self.hw), a_n, dtype=np.int64)
            np.minimum.at(first_pix, (np.broadcast_to(rows, (p_n, a_n)), np.where(valid, pix, 0)),
                          np.where(valid, pos, a_n))
            new_px = valid & (first_pix[rows, pix] == pos) & ~pix_in_state[rows, pix]
            dist = base_pix[:, None] + np.cumsum(new_px, axis=1)
        elif self.norm == "L1":
            dist = base_l1[:, None] + np.cumsum(np.where(valid, self._act_l1_arr[seq], 0.0), axis=1)
        else:
            dist = np.sqrt(base_sq[:, None] + np.cumsum(np.where(valid, self._act_sq_arr[seq], 0.0), axis=1))
        ok = valid & (np.cumsum(valid & (dist > self.budget), axis=1) == 0)
        ok &= np.cumsum(ok, axis=1) <= self.max_playout_depth
        out = []
        for j in range(p_n):
            sel = np.flatnonzero(ok[j])
            out.append((seq[j, sel].tolist(), dist[j, sel].astype(np.float64).tolist()))
        return out

    def playouts(self, states: list[State]) -> Playouts:
        """Random playouts from non-adversarial ``states``, all queried together.

        Misclassification is searched along each play by bisection over the move count (query the last state,
        then halve), batched across plays: about log2(T) + 1 oracle calls instead of one per move. The state
        returned is always one the oracle saw misclassified.
        """
        trajs = self._trajectories(states)
        n = len(states)
        values = np.full(n, self.budget)
        adv: list[State | None] = [None] * n
        lengths = [len(t[0]) for t in trajs]

        def state_at(j: int, t: int) -> State:
            s = dict(states[j])
            for a in trajs[j][0][:t]:
                for e, v in zip(self._act_elems[a], self._act_values[a]):
                    s[e] = v
            return s

        live = [j for j in range(n) if lengths[j] > 0]
        p_end = self.probs(np.stack([self.image(state_at(j, lengths[j])) for j in live])) if live else None
        is_adv = p_end.argmax(axis=1) != self.label if live else []
        if live and self.failure_margin:
            # a play that ends inside the budget without an adversarial example is worth d * (1 + margin), the
            # margin being the share of the log-probability margin left at its end: any adversarial example
            # (<= d) still beats any failure, and failures closer to the decision boundary rank better
            # (DeepGame gives them all d)
            values[live] = self.budget * (1.0 + self.margin(p_end))
        lo = {j: 0 for j, a in zip(live, is_adv) if a}
        hi = {j: lengths[j] for j in lo}
        while True:
            todo = [j for j in lo if hi[j] - lo[j] > 1]
            if not todo:
                break
            mids = {j: (lo[j] + hi[j]) // 2 for j in todo}
            res = self.adversarial([state_at(j, mids[j]) for j in todo])
            for j, r in zip(todo, res):
                if r:
                    hi[j] = mids[j]
                else:
                    lo[j] = mids[j]
        for j in hi:
            adv[j] = {e: v for e, v in state_at(j, hi[j]).items() if v != self.flat0[e]}
            values[j] = trajs[j][1][hi[j] - 1]
        return Playouts(values=values, adversarial=adv)

    # ------------------------------------------------------------ refinement
    def prune(self, state: State) -> State:
        """Greedily drop manipulations an adversarial state does not need (DeepGame's ``scrutinizePath``).

        Pixels are tried first (all their channels at once), least harmful first by the true-class probability
        after removal, then single elements; a removal is kept only if the oracle still misclassifies.
        """
        for unit in ("pixel", "element"):
            groups: dict[int, list[int]] = {}
            for e in state:
                groups.setdefault(e % self.hw if unit == "pixel" else e, []).append(e)
            if len(groups) <= 1 and unit == "element":
                break
            keys = list(groups)
            trials = [{e: v for e, v in state.items() if e not in set(groups[g])} for g in keys]
            p = self.probs(np.stack([self.image(s) for s in trials]))
            ok = p.argmax(axis=1) != self.label
            order = np.lexsort((p[:, self.label], ~ok))  # still-adversarial first, then least true-class prob
            first = True
            for i in order.tolist():
                drop = set(groups[keys[i]])
                if first:
                    # the first trial was already queried in the batch above
                    first = False
                    if ok[i]:
                        state = {e: v for e, v in state.items() if e not in drop}
                    continue
                trial = {e: v for e, v in state.items() if e not in drop}
                if trial and self.adversarial([trial])[0]:
                    state = trial
            if unit == "pixel" and self.c == 1:
                break
        return state
