"""Contextual fusion (Akumalla, Haney, Bazhenov 2020) on MNIST digits composited onto texture scenes.

Training stays inside this task rather than in the zoo: the zoo keys recipes by built-in data set names and
trains on ``load_dataset(recipe.dataset, "train")``, while the fusion models train on composited scenes. The
weights are cached instead by a hash of the training config under ``<cache_dir>/fusion`` (``cache_dir`` is
``ctx.cache_dir`` or the zoo's default), written atomically and read back with ``weights_only=True``.

Yields one kind="fusion" row per (p, alpha, threat, attack, eps or sigma), and writes plots (accuracy vs eps,
vs sigma, vs p) and a markdown table into the run directory.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from defenses.contextual_fusion.evaluation import evaluate_suite
from defenses.contextual_fusion.model import FusionModel, LinearOnFeatures
from defenses.contextual_fusion.scenes import make_scenes
from defenses.contextual_fusion.training import (
    Streams,
    fusion_features,
    split_classifier,
    train_bg_only,
    train_fusion,
    train_streams,
)
from rbl_core.architectures import build
from rbl_core.figures import plt, save_figure
from rbl_core.io import atomic_write, atomic_write_text, sha256_json
from robustbench_local.data import DataSplit, load_dataset
from robustbench_local.results import ResultRow
from robustbench_local.tasks.base import ConfigError, TaskContext
from robustbench_local.zoo.cache import default_cache_dir

SCENES_VERSION = 1   # bump when scenes.py changes what a seed draws, so cached weights retrain
SHAPE = (1, 28, 28)


def _cache(ctx: TaskContext) -> Path:
    return Path(ctx.cache_dir or default_cache_dir()) / "fusion"


def _cached(path: Path, make: Callable[[], dict]) -> dict:
    """The state dict at ``path``, or ``make()``'s, saved atomically first."""
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    state = make()
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return state


def _stream_skeleton() -> LinearOnFeatures:
    return split_classifier(build("cnn_small", SHAPE, 10))


def _streams(t: DictConfig, ctx: TaskContext, train: DataSplit) -> tuple[Streams, str]:
    ident = {"what": "streams", "v": SCENES_VERSION, "n_train": int(t.n_train), "epochs": int(t.epochs),
             "seed": int(t.seed), "arch": "cnn_small"}
    key = sha256_json(ident)[:20]

    def make() -> dict:
        # Both streams learn from scenes independent of the label (p = chance): each learns its own factor.
        fg_set = make_scenes(train, 0.1, seed=int(t.seed) * 100 + 1)
        bg_set = make_scenes(train, 0.1, seed=int(t.seed) * 100 + 2)
        s = train_streams(fg_set, bg_set, epochs=int(t.epochs), seed=int(t.seed))
        return {"fg": s.fg.state_dict(), "bg": s.bg.state_dict()}

    state = _cached(_cache(ctx) / f"streams-{key}.pt", make)
    fg, bg = _stream_skeleton(), _stream_skeleton()
    fg.load_state_dict(state["fg"])
    bg.load_state_dict(state["bg"])
    return Streams(fg.eval(), bg.eval()), key


def _heads(t: DictConfig, ctx: TaskContext, streams: Streams, stream_key: str, train: DataSplit, p: float
           ) -> tuple[LinearOnFeatures, dict[float, FusionModel]]:
    ident = {"what": "heads", "streams": stream_key, "p": p, "alpha": [float(a) for a in t.alpha],
             "head_steps": int(t.head_steps), "seed": int(t.seed)}
    key = sha256_json(ident)[:20]

    def make() -> dict:
        scenes = make_scenes(train, p, seed=int(t.seed) * 100 + 3)
        feats = fusion_features(streams, scenes.composite)
        out = {"bg_only": train_bg_only(streams, scenes, seed=int(t.seed), steps=int(t.head_steps),
                                        feats=feats).head.state_dict()}
        for i, a in enumerate(t.alpha):
            out[f"fused{i}"] = train_fusion(streams, scenes, alpha=float(a), seed=int(t.seed),
                                            steps=int(t.head_steps), feats=feats).head.state_dict()
        return out

    state = _cached(_cache(ctx) / f"heads-{key}.pt", make)

    def linear(sd: dict) -> nn.Linear:
        head = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
        head.load_state_dict(sd)
        return head.eval()

    bg_only = LinearOnFeatures(streams.bg.features, linear(state["bg_only"])).eval()
    fused = {float(a): FusionModel(streams.fg.features, streams.bg.features, linear(state[f"fused{i}"]),
                                   fg_dim=streams.fg_dim).eval() for i, a in enumerate(t.alpha)}
    return bg_only, fused


def _plots(rows: list[ResultRow], out: Path) -> list[Path]:
    """Accuracy vs eps (transferred PGD), vs sigma (blur) and vs p (transferred PGD at the largest eps)."""
    m = [r.metrics for r in rows]
    paths = []
    p_max, alphas = max(r["p"] for r in m), sorted({r["alpha"] for r in m})
    for threat, x_key, attack, name in (("transfer-from-fg", "eps", "pgd", "fusion_acc_vs_eps.png"),
                                        ("blur", "sigma", "gaussian", "fusion_acc_vs_sigma.png")):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        sel = [r for r in m if r["threat"] == threat and r["attack"] == attack and r["p"] == p_max]
        # The clean row is the eps = 0 / sigma = 0 point of both curves.
        sel += [{**r, x_key: 0.0} for r in m if r["threat"] == "clean" and r["p"] == p_max]
        for a in alphas:
            pts = sorted((r[x_key], r["fused_acc"]) for r in sel if r["alpha"] == a)
            ax.plot(*zip(*pts), marker="o", label=f"fused alpha={a:g}")
        base = sorted((r[x_key], r["fg_acc"], r["bg_acc"]) for r in sel if r["alpha"] == alphas[0])
        ax.plot([b[0] for b in base], [b[1] for b in base], "k--", marker="s", label="fg only")
        ax.plot([b[0] for b in base], [b[2] for b in base], "k:", marker="^", label="bg only")
        ax.set_xlabel(x_key), ax.set_ylabel("accuracy"), ax.set_title(f"{threat} {attack}, p={p_max:g}")
        ax.legend(fontsize=7)
        paths.append(save_figure(fig, out / name))
    eps_max = max(r["eps"] for r in m if r["threat"] == "transfer-from-fg")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for threat, attack, eps, style in (("clean", "none", 0.0, "-"), ("transfer-from-fg", "pgd", eps_max, "--")):
        sel = [r for r in m if r["threat"] == threat and r["attack"] == attack and r.get("eps") == eps]
        for a in alphas:
            pts = sorted((r["p"], r["fused_acc"]) for r in sel if r["alpha"] == a)
            ax.plot(*zip(*pts), style, marker="o", label=f"{threat} fused alpha={a:g}")
        pts = sorted((r["p"], r["fg_acc"]) for r in sel if r["alpha"] == alphas[0])
        ax.plot(*zip(*pts), style, color="k", marker="s", label=f"{threat} fg only")
    ax.set_xlabel("p (scene = label)"), ax.set_ylabel("accuracy"), ax.set_title(f"vs p (PGD eps={eps_max:g})")
    ax.legend(fontsize=6)
    paths.append(save_figure(fig, out / "fusion_acc_vs_p.png"))
    return paths


def markdown_table(rows: list[ResultRow]) -> str:
    """One line per row: p, alpha, fg share, threat, attack, eps/sigma and the three accuracies (percent)."""
    lines = ["| p | alpha | fg share | threat | attack | eps / sigma | fg | bg | fused | fused - fg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics
        level = m["sigma"] if m["threat"] == "blur" else m["eps"]
        lines.append(f"| {m['p']:g} | {m['alpha']:g} | {m['fg_share']:.3f} | {m['threat']} | {m['attack']} | "
                     f"{level:g} | {100 * m['fg_acc']:.1f} | {100 * m['bg_acc']:.1f} | {100 * m['fused_acc']:.1f} | "
                     f"{100 * (m['fused_acc'] - m['fg_acc']):+.1f} |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, ctx: TaskContext) -> Iterator[ResultRow]:
    """Train (or load) the streams and heads, then yield fusion rows for every p, alpha and threat."""
    t = cfg.task
    if cfg.dataset.name != "mnist":
        raise ConfigError(f"task=contextual_fusion composites MNIST digits; set dataset=mnist "
                          f"(got {cfg.dataset.name!r})")
    train = load_dataset("mnist", "train", root=ctx.data_root, n=int(t.n_train))
    test = load_dataset("mnist", "test", root=ctx.data_root, n=int(t.n_test))
    streams, stream_key = _streams(t, ctx, train)
    rows: list[ResultRow] = []
    for p in [float(v) for v in t.p]:
        bg_only, fused = _heads(t, ctx, streams, stream_key, train, p)
        scenes = make_scenes(test, p, seed=int(t.seed) * 100 + 4)
        for alpha, model in fused.items():
            start = time.perf_counter()
            torch.manual_seed(int(t.seed))
            results = evaluate_suite({"fg": streams.fg, "bg": bg_only, "fused": model}, scenes.composite, scenes.y,
                                     scenes.mask, eps=[float(e) for e in t.eps], sigma=[float(s) for s in t.sigma],
                                     steps=int(t.pgd_steps), seed=int(t.seed), batch_size=ctx.batch_size)
            per = (time.perf_counter() - start) / max(len(results), 1)
            for res in results:
                metrics = {**res, "p": p, "alpha": alpha, "fg_share": model.fg_share()}
                level = res.get("sigma") if res["threat"] == "blur" else res.get("eps")
                row = ResultRow(kind="fusion", dataset="mnist", model=f"fusion_p{p:g}_a{alpha:g}",
                                defense="contextual_fusion", attack=f"{res['threat']}:{res['attack']}",
                                threat_model="blur" if res["threat"] == "blur" else "Linf", eps=level,
                                seed=cfg.seed, metrics=metrics, time_s=per,
                                config=ctx.run_config("dataset", "task", "seed", p=p, alpha=alpha,
                                                      threat=res["threat"], attack=res["attack"], level=level))
                rows.append(row)
                yield row
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    _plots(rows, ctx.output_dir)
    table = markdown_table(rows)
    atomic_write_text(ctx.output_dir / "contextual_fusion.md", table)
    print(table)
