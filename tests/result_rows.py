"""Valid result rows for tests that exercise the store and the leaderboard without running attacks."""
from __future__ import annotations

from robustbench_local.results import ResultRow


def evasion_row(model: str, attacks: dict[str, str], clean: str = "1111", aa: str | None = None,
                threat: str = "Linf", eps: float | None = 0.1, dataset: str = "digits", defense: str = "none",
                adaptive: str | None = None, **config) -> ResultRow:
    """An evasion row with per-example masks ``attacks`` (key -> "0101"), accuracies computed from them."""
    def share(mask: str) -> float:
        return mask.count("1") / len(mask)

    worst = clean
    for mask in attacks.values():
        worst = "".join("1" if a == b == "1" else "0" for a, b in zip(worst, mask))
    metrics = {"n": len(clean), "clean_acc": share(clean), "robust_acc": share(worst), "clean_mask": clean,
               "masks": dict(attacks),
               "attacks": {k: {"name": k.split("#")[0], "robust_acc": share(m)} for k, m in attacks.items()},
               "autoattack_acc": share(attacks[aa]) if aa else None, "autoattack_key": aa, "adaptive": adaptive}
    return ResultRow(kind="evasion", dataset=dataset, model=model, defense=defense, attack="+".join(attacks),
                     threat_model=threat,
                     eps=eps, metrics=metrics, config={"attacks": sorted(attacks), "model": model, **config,
                                                     **({"defense": defense, "adaptive": adaptive}
                                                        if defense != "none" or adaptive else {})},
                     time_s=1.0)


def certification_row(model: str, statuses: str, clean: str | None = None, eps: float = 0.1,
                      dataset: str = "digits") -> ResultRow:
    """A certification row with per-example statuses (h/v/u)."""
    n = len(statuses)
    clean = clean or "1" * n
    metrics = {"n": n, "clean_acc": clean.count("1") / n, "certified_acc": statuses.count("h") / n,
               "holds": statuses.count("h"), "violated": statuses.count("v"), "unknown": statuses.count("u"),
               "statuses": statuses}
    return ResultRow(kind="certification", dataset=dataset, model=model, attack="verify", threat_model="Linf",
                     eps=eps, metrics=metrics, config={"model": model, "statuses": statuses})
