"""The ``curve`` kind: robust accuracy at every budget of a list, from one run of one attack.

Per budget it keeps the per-example robust mask. An example broken at a budget stays broken at every larger
one (the re-measured adversarial example lies inside the larger ball too), so the masks shrink and the
curve never rises; a row whose masks do not nest is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from robustbench_local.results.kinds import Metrics, RowSchemaError, register_kind
from robustbench_local.results.schemas import check_model_info


@register_kind
@dataclass(frozen=True, kw_only=True)
class CurveMetrics(Metrics):
    """Robust accuracy of one attack run as a function of eps (ascending), with per-example masks."""

    kind = "curve"
    fractions = ("clean_acc",)

    n: int
    attack_name: str
    attack_key: str
    clean_acc: float
    clean_mask: str
    epsilons: list[float]
    masks: list[str]            # robust per example, one mask per budget
    robust_acc: list[float]     # share of each mask
    model_info: dict | None = None

    def check(self) -> None:
        """Ascending budgets, one mask and accuracy each, masks inside the clean mask and nested."""
        super().check()
        check_model_info(self.kind, self.model_info)
        self._mask("clean_mask", self.clean_mask)
        self._share("clean_acc", self.clean_acc, self.clean_mask)
        if not self.epsilons or list(self.epsilons) != sorted(set(self.epsilons)):
            raise RowSchemaError(f"curve row: metrics.epsilons must be non-empty and strictly ascending, "
                                 f"got {self.epsilons}")
        if not len(self.masks) == len(self.robust_acc) == len(self.epsilons):
            raise RowSchemaError("curve row: metrics.masks, robust_acc and epsilons differ in length")
        previous = self.clean_mask
        for eps, mask, acc in zip(self.epsilons, self.masks, self.robust_acc):
            self._mask(f"masks[eps={eps}]", mask)
            self._share(f"robust_acc[eps={eps}]", acc, mask)
            if any(m == "1" and p == "0" for m, p in zip(mask, previous)):
                raise RowSchemaError(f"curve row: an example robust at eps={eps} was broken at a smaller budget")
            previous = mask
