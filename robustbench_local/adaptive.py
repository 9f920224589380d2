"""How a task attacks a (possibly defended) model: white-box, defense-unaware, end to end, BPDA or EOT.

A preprocessing wrapper states its own adaptive mode (``Preprocessed.adaptive``); the harness wraps the
configured attacks to match, and every evasion row records the mode in ``metrics.adaptive``.
"""
from __future__ import annotations

from torch import nn

from attacks.adaptive.wrappers import EOT, Unaware
from attacks.base import EvasionAttack

DEFAULT_EOT_SAMPLES = 8


def defense_mode(model: nn.Module) -> str | None:
    """The adaptive mode a defended model admits (e2e, bpda, eot), or None for a bare classifier."""
    return getattr(model, "adaptive", None)


def adapt_attacks(attacks: dict[str, EvasionAttack], model: nn.Module, bare: nn.Module,
                  unaware: bool = False) -> tuple[dict[str, EvasionAttack], str | None]:
    """``attacks`` wrapped for ``model`` and the mode to record: unaware transfer from ``bare``, or adaptive."""
    mode = defense_mode(model)
    if mode is None:
        return dict(attacks), None
    if unaware:
        return {n: Unaware(a, bare) for n, a in attacks.items()}, "unaware"
    if mode == "eot":
        samples = int(getattr(model, "eot_samples", DEFAULT_EOT_SAMPLES))
        return {n: EOT(a, samples) for n, a in attacks.items()}, mode
    return dict(attacks), mode
