"""The contextual fusion task's report: a markdown table and plots, drawn only from its typed result rows."""
from __future__ import annotations

from pathlib import Path

from rbl_core.figures import plt, save_figure
from robustbench_local.results import ResultRow

E2E = ("e2e-fg-region", "e2e-whole")
THREATS = ("transfer-from-fg",) + E2E


def fg_baseline(m: dict) -> float:
    """fg under the same threat: its white-box accuracy for end-to-end threats, else its accuracy on the row's examples."""
    return m["fg_whitebox_acc"] if m["threat"] in E2E else m["fg_acc"]


def markdown_table(rows: list[ResultRow]) -> str:
    """One line per row (percent); ``gain`` is fused minus fg under the same threat."""
    lines = ["| scene set | p | model | fg share | threat | attack | eps / sigma | fg | fg white-box | bg | fused | gain |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics
        level = m["sigma"] if m["threat"] == "blur" else m["eps"]
        white = f"{100 * m['fg_whitebox_acc']:.1f}" if m.get("fg_whitebox_acc") is not None else ""
        lines.append(f"| {r.dataset} | {m['p']:g} | {r.model} | {m['fg_share']:.3f} | {m['threat']} | {m['attack']} | "
                     f"{level:g} | {100 * m['fg_acc']:.1f} | {white} | {100 * m['bg_acc']:.1f} | "
                     f"{100 * m['fused_acc']:.1f} | {100 * (m['fused_acc'] - fg_baseline(m)):+.1f} |")
    return "\n".join(lines) + "\n"


def _constant_sets(rows: list[ResultRow]) -> dict[str, float]:
    return {r.dataset: r.metrics["p"] for r in rows if r.metrics.get("class_p") is None}


def _vs_eps(rows: list[ResultRow], scene_set: str, out: Path) -> Path:
    sel = [r for r in rows if r.dataset == scene_set]
    models = sorted({r.model for r in sel})
    attacks = sorted({r.metrics["attack"] for r in sel if r.metrics["threat"] in THREATS})
    clean = {r.model: r.metrics for r in sel if r.metrics["threat"] == "clean"}
    fig, axes = plt.subplots(1, len(THREATS), figsize=(4.2 * len(THREATS), 3.6), sharey=True)
    styles = ["-", "--", ":", "-."]
    for ax, threat in zip(axes, THREATS):
        for k, attack in enumerate(attacks):
            line = styles[k % len(styles)]
            pts = [r for r in sel if r.metrics["threat"] == threat and r.metrics["attack"] == attack]
            for model in models:
                curve = sorted([(0.0, clean[model]["fused_acc"])] +
                               [(r.metrics["eps"], r.metrics["fused_acc"]) for r in pts if r.model == model])
                ax.plot(*zip(*curve), line, marker="o", ms=3, label=f"{model} {attack}")
            base = sorted({(0.0, clean[models[0]]["fg_acc"])} | {(r.metrics["eps"], fg_baseline(r.metrics)) for r in pts})
            ax.plot(*zip(*base), line, color="k", marker="s", ms=3, label=f"fg only {attack}")
        ax.set_title(threat, fontsize=9)
        ax.set_xlabel("Linf eps")
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=6)
    fig.suptitle(f"{scene_set}: accuracy vs eps (fg: same threat on fg)", fontsize=9)
    return save_figure(fig, out / "fusion_acc_vs_eps.png")


def _vs_sigma(rows: list[ResultRow], scene_set: str, out: Path) -> Path:
    sel = [r for r in rows if r.dataset == scene_set and r.metrics["threat"] in ("clean", "blur")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for model in sorted({r.model for r in sel}):
        pts = sorted((r.metrics.get("sigma") or 0.0, r.metrics["fused_acc"]) for r in sel if r.model == model)
        ax.plot(*zip(*pts), marker="o", label=model)
    first = sorted({r.model for r in sel})[0]
    base = sorted((r.metrics.get("sigma") or 0.0, r.metrics["fg_acc"], r.metrics["bg_acc"]) for r in sel if r.model == first)
    ax.plot([b[0] for b in base], [b[1] for b in base], "k--", marker="s", label="fg only")
    ax.plot([b[0] for b in base], [b[2] for b in base], "k:", marker="^", label="bg only")
    ax.set_xlabel("blur sigma (px)"), ax.set_ylabel("accuracy"), ax.set_title(f"{scene_set}: Gaussian blur")
    ax.legend(fontsize=7)
    return save_figure(fig, out / "fusion_acc_vs_sigma.png")


def _vs_p(rows: list[ResultRow], sets: dict[str, float], out: Path) -> Path:
    eps_max = max(r.metrics["eps"] for r in rows if r.metrics["threat"] == "transfer-from-fg")
    attack = sorted({r.metrics["attack"] for r in rows if r.metrics["threat"] == "transfer-from-fg"})[-1]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for threat, line in (("clean", "-"), ("transfer-from-fg", "--")):
        sel = [r for r in rows if r.dataset in sets and r.metrics["threat"] == threat
               and (threat == "clean" or (r.metrics["attack"] == attack and r.metrics["eps"] == eps_max))]
        for model in sorted({r.model for r in sel}):
            pts = sorted((sets[r.dataset], r.metrics["fused_acc"]) for r in sel if r.model == model)
            ax.plot(*zip(*pts), line, marker="o", label=f"{threat} {model}")
        first = sorted({r.model for r in sel})[0]
        pts = sorted((sets[r.dataset], r.metrics["fg_acc"]) for r in sel if r.model == first)
        ax.plot(*zip(*pts), line, color="k", marker="s", label=f"{threat} fg only")
    ax.set_xlabel("p (scene = label)"), ax.set_ylabel("accuracy")
    ax.set_title(f"vs p (transfer {attack}, eps={eps_max:g})", fontsize=9)
    ax.legend(fontsize=6)
    return save_figure(fig, out / "fusion_acc_vs_p.png")


def _gain_vs_class_p(rows: list[ResultRow], out: Path) -> Path | None:
    sel = [r for r in rows if r.metrics.get("class_p") is not None and r.metrics["threat"] == "transfer-from-fg"]
    if not sel:
        return None
    # The eps where fusion's mean per-class gain is largest: at the largest eps every model is near 0.
    levels = sorted({r.metrics["eps"] for r in sel})
    eps_best = max(levels, key=lambda e: sum(r.metrics["fused_acc"] - r.metrics["fg_acc"] for r in sel
                                             if r.metrics["eps"] == e))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in sel:
        m = r.metrics
        if m["eps"] != eps_best:
            continue
        pts = sorted((m["class_p"][int(c)], row["gain"]) for c, row in m["per_class"].items())
        ax.plot(*zip(*pts), marker="o", label=f"{r.dataset} {r.model} {m['attack']} (rho {m['gain_context_corr']})")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("class p (scene = label)"), ax.set_ylabel("fused - fg accuracy")
    ax.set_title(f"per-class gain vs context variability (transfer, eps={eps_best:g})", fontsize=9)
    ax.legend(fontsize=6)
    return save_figure(fig, out / "fusion_gain_vs_class_p.png")


def plots(rows: list[ResultRow], out: Path) -> list[Path]:
    """Accuracy vs eps and vs sigma (the constant-p set with the largest p), vs p, and per-class gain vs class p."""
    sets = _constant_sets(rows)
    paths = []
    if sets:
        top = max(sets, key=sets.get)
        paths += [_vs_eps(rows, top, out), _vs_sigma(rows, top, out), _vs_p(rows, sets, out)]
    gain = _gain_vs_class_p(rows, out)
    return paths + ([gain] if gain else [])
