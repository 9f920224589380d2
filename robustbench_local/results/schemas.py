"""The result kinds of the methods in this suite; a new method registers its own kind the same way."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from robustbench_local.results.kinds import Metrics, RowSchemaError, register_kind
from robustbench_local.sources.models import ModelInfo

ADAPTIVE_MODES = (None, "unaware", "e2e", "bpda", "eot")
CERT_STATUS = {"h": "holds", "v": "violated", "u": "unknown"}
# Where an evaluated model came from (RobustBench's model info): shown on the leaderboard, and its identity
# (recipe hash or file hash) keeps two checkpoints under one name apart.
MODEL_INFO = typing.get_type_hints(ModelInfo)   # field -> type, the dataclass the harness fills in
_MODEL_INFO_OPTIONAL = {f.name for f in dataclasses.fields(ModelInfo) if f.default is not dataclasses.MISSING}


def check_model_info(kind: str, info: dict | None) -> None:
    """Raise unless ``info`` is None or has every MODEL_INFO key with its type."""
    if info is None:
        return
    for key, typ in MODEL_INFO.items():
        if key in _MODEL_INFO_OPTIONAL and key not in info:
            continue   # a row recorded before the field existed
        if not isinstance(info.get(key), typ) or isinstance(info.get(key), bool):
            raise RowSchemaError(f"{kind} row: metrics.model_info.{key} must be a {typ.__name__}, "
                                 f"got {info.get(key)!r}")


@register_kind
@dataclass(frozen=True, kw_only=True)
class EvasionMetrics(Metrics):
    """Robust accuracy at a fixed budget: per attack and per example, keyed by each attack's full config."""

    kind = "evasion"
    fractions = ("clean_acc", "robust_acc", "autoattack_acc")

    n: int
    clean_acc: float
    robust_acc: float           # per-example worst case over clean correctness and every attack
    clean_mask: str
    masks: dict[str, str]       # attack key ("name#config-hash") -> robust per example
    attacks: dict[str, dict]    # attack key -> {"name", "robust_acc", distances, queries, time ...}
    autoattack_acc: float | None = None   # AutoAttack standard, when it was one of the attacks ...
    autoattack_key: str | None = None     # ... under this key
    model_info: dict | None = None
    # How the attacks saw a preprocessing defense: unaware (crafted on the bare classifier), e2e, bpda or eot;
    # None for an undefended model (plain white-box).
    adaptive: str | None = None
    # The device that ran ("cpu", "cuda:0") and the GPU's name; None on rows recorded before they were kept.
    device: str | None = None
    gpu: str | None = None
    oom_retries: int | None = None   # attack batches halved after CUDA ran out of memory

    def check(self) -> None:
        """Masks have n entries, accuracies are their shares, and masks and attacks name the same keys."""
        super().check()
        if self.adaptive not in ADAPTIVE_MODES:
            raise RowSchemaError(f"evasion row: metrics.adaptive must be one of {list(ADAPTIVE_MODES)}, "
                                 f"got {self.adaptive!r}")
        check_model_info(self.kind, self.model_info)
        self._mask("clean_mask", self.clean_mask)
        self._share("clean_acc", self.clean_acc, self.clean_mask)
        if set(self.masks) != set(self.attacks):
            raise RowSchemaError(f"evasion row: metrics.masks {sorted(self.masks)} and metrics.attacks "
                                 f"{sorted(self.attacks)} name different attacks")
        worst = self.clean_mask
        for key, mask in self.masks.items():
            self._mask(f"masks[{key!r}]", mask)
            summary = self.attacks[key]
            if "name" not in summary or "robust_acc" not in summary:
                raise RowSchemaError(f"evasion row: metrics.attacks[{key!r}] needs 'name' and 'robust_acc'")
            self._share(f"attacks[{key!r}].robust_acc", summary["robust_acc"], mask)
            worst = "".join("1" if a == b == "1" else "0" for a, b in zip(worst, mask))
        self._share("robust_acc", self.robust_acc, worst)
        if (self.autoattack_acc is None) != (self.autoattack_key is None):
            raise RowSchemaError("evasion row: metrics.autoattack_acc and metrics.autoattack_key go together")
        if self.autoattack_key is not None:
            if self.autoattack_key not in self.masks:
                raise RowSchemaError(f"evasion row: metrics.autoattack_key {self.autoattack_key!r} is not an attack")
            self._share("autoattack_acc", self.autoattack_acc, self.masks[self.autoattack_key])


@register_kind
@dataclass(frozen=True, kw_only=True)
class CertificationMetrics(Metrics):
    """Verifier verdicts per example: h(olds), v(iolated, re-checked), u(nknown)."""

    kind = "certification"
    fractions = ("clean_acc", "certified_acc")

    n: int
    clean_acc: float
    certified_acc: float
    holds: int
    violated: int
    unknown: int
    statuses: str               # one of h/v/u per example, in test-split order
    model_info: dict | None = None

    def check(self) -> None:
        """Statuses cover n examples and agree with the counts and the certified accuracy."""
        super().check()
        check_model_info(self.kind, self.model_info)
        if len(self.statuses) != self.n or set(self.statuses) - set(CERT_STATUS):
            raise RowSchemaError(f"certification row: metrics.statuses must be {self.n} characters of h/v/u")
        for letter, name in CERT_STATUS.items():
            if self.statuses.count(letter) != getattr(self, name):
                raise RowSchemaError(f"certification row: metrics.{name}={getattr(self, name)} disagrees with "
                                     f"statuses ({self.statuses.count(letter)})")
        if self.n and abs(self.certified_acc - self.holds / self.n) > 1e-9:
            raise RowSchemaError(f"certification row: certified_acc={self.certified_acc} is not holds/n")


@register_kind
@dataclass(frozen=True, kw_only=True)
class VerificationMetrics(Metrics):
    """A VNN-COMP style run: answers per instance and the ones that disagree with the expected answer."""

    kind = "verification"

    n: int
    sat: int
    unsat: int
    timeout: int
    unknown: int
    wrong: list[str] = field(default_factory=list)
    bad_counterexamples: int = 0

    def check(self) -> None:
        """The answers add up to n."""
        super().check()
        if self.sat + self.unsat + self.timeout + self.unknown != self.n:
            raise RowSchemaError(f"verification row: sat+unsat+timeout+unknown != n={self.n}")


@register_kind
@dataclass(frozen=True, kw_only=True)
class FoolingMetrics(Metrics):
    """Fooling images: the best image's confidence for every target class."""

    kind = "fooling"
    fractions = ("min_confidence",)

    confidence: list[float]
    min_confidence: float
    evaluations: int

    def check(self) -> None:
        """Confidences are probabilities and min_confidence is their minimum."""
        super().check()
        if not self.confidence or any(not 0.0 <= c <= 1.0 for c in self.confidence):
            raise RowSchemaError("fooling row: metrics.confidence must be a non-empty list of probabilities")
        if abs(min(self.confidence) - self.min_confidence) > 1e-9:
            raise RowSchemaError("fooling row: metrics.min_confidence is not the minimum of metrics.confidence")


@register_kind
@dataclass(frozen=True, kw_only=True)
class PoisoningMetrics(Metrics):
    """Poison-then-train: clean test accuracy of the victim trained on clean vs on poisoned data."""

    kind = "poisoning"
    fractions = ("clean_trained_acc", "poisoned_trained_acc", "oracle_acc")

    n_train: int
    n_test: int
    clean_trained_acc: float
    poisoned_trained_acc: float
    oracle_acc: float | None = None


@register_kind
@dataclass(frozen=True, kw_only=True)
class EnsembleMetrics(Metrics):
    """Ensemble studies: transfer accuracy from hold-out surrogates, or the members' transferability matrix."""

    kind = "ensemble"
    fractions = ("clean_acc", "transfer_acc", "mean_off_diagonal")

    n: int
    part: str
    clean_acc: float | None = None
    transfer_acc: float | None = None
    per_attack: dict[str, float] | None = None
    matrix: list[list[float]] | None = None
    mean_off_diagonal: float | None = None

    def check(self) -> None:
        """Each part carries its own numbers."""
        super().check()
        need = {"transfer": ("clean_acc", "transfer_acc"), "transferability": ("matrix", "mean_off_diagonal")}
        if self.part not in need:
            raise RowSchemaError(f"ensemble row: metrics.part must be one of {list(need)}, got {self.part!r}")
        missing = [k for k in need[self.part] if getattr(self, k) is None]
        if missing:
            raise RowSchemaError(f"ensemble row ({self.part}): metrics {missing} are missing")


@register_kind
@dataclass(frozen=True, kw_only=True)
class PerturbationMetrics(Metrics):
    """Minimal-perturbation attacks: success and the size of the perturbation found, not a fixed-budget accuracy."""

    kind = "perturbation"
    fractions = ("success_rate",)

    n: int
    success_rate: float
    success_mask: str
    access: str                 # white-box | black-box
    threat: str
    median_L0: float | None = None
    median_L2: float | None = None
    median_queries: float | None = None

    def check(self) -> None:
        """The success rate is the share of the success mask."""
        super().check()
        self._mask("success_mask", self.success_mask)
        self._share("success_rate", self.success_rate, self.success_mask)


@register_kind
@dataclass(frozen=True, kw_only=True)
class FusionMetrics(Metrics):
    """Contextual fusion: fg-only, bg-only and fused accuracy under one threat at one eps or blur sigma."""

    kind = "fusion"
    fractions = ("fg_acc", "bg_acc", "fused_acc", "p", "fg_share", "fg_whitebox_acc")
    threats = ("clean", "transfer-from-fg", "e2e-fg-region", "e2e-whole", "blur")

    n: int
    p: float                    # probability that the scene class equals the label (mean over classes)
    alpha: float                # weight of the ||theta_fg||^2 penalty
    threat: str
    attack: str
    fg_acc: float
    bg_acc: float
    fused_acc: float
    per_class: dict[str, dict[str, float]]   # class -> {"fg", "bg", "fused", "gain"}
    eps: float | None = None
    sigma: float | None = None
    fg_share: float | None = None   # ||theta_fg|| / (||theta_fg|| + ||theta_bg||) of the fused head
    # End-to-end threats: fg under the same threat crafted on fg itself (the fair single-stream baseline).
    fg_whitebox_acc: float | None = None
    class_p: list[float] | None = None          # per-class p, when the set varies it by class
    gain_context_corr: float | None = None      # Spearman rho of per-class (fused - fg) gain vs class_p

    def check(self) -> None:
        """A known threat; blur rows carry sigma, the others eps; class_p has one p per class."""
        super().check()
        if self.class_p is not None and any(not 0 <= v <= 1 for v in self.class_p):
            raise RowSchemaError(f"fusion row: metrics.class_p must lie in [0, 1], got {self.class_p}")
        if self.gain_context_corr is not None and not -1 <= self.gain_context_corr <= 1:
            raise RowSchemaError(f"fusion row: metrics.gain_context_corr must lie in [-1, 1], got {self.gain_context_corr}")
        if self.threat not in self.threats:
            raise RowSchemaError(f"fusion row: metrics.threat must be one of {list(self.threats)}, got {self.threat!r}")
        if self.threat == "blur" and self.sigma is None:
            raise RowSchemaError("fusion row (blur): metrics.sigma is missing")
        if self.threat != "blur" and self.eps is None:
            raise RowSchemaError(f"fusion row ({self.threat}): metrics.eps is missing")
        if self.alpha < 0:
            raise RowSchemaError(f"fusion row: metrics.alpha must be >= 0, got {self.alpha}")


@register_kind
@dataclass(frozen=True, kw_only=True)
class CaptionMetrics(Metrics):
    """Caption attacks on a captioner: targeted exact match or keyword hit, BLEU-4 to the target, feature distances."""

    kind = "caption"
    strategies = ("clean", "targeted", "keyword")
    fractions = ("success_rate", "clean_success_rate", "bleu_to_target", "transfer_success_rate",
                 "transfer_bleu_to_target")

    n: int
    strategy: str               # clean (the captioner on its test scenes) | targeted | keyword
    success_rate: float         # clean: exact match with the reference; targeted: with the target; keyword: hit
    success_mask: str
    bleu_to_target: float       # corpus BLEU-4 (sacrebleu) against the reference (clean) or the target caption
    clean_success_rate: float | None = None     # the same criterion on the clean images (the chance baseline)
    max_linf: float | None = None               # largest re-measured ||x' - x||_inf
    feature_distance: float | None = None       # mean ||phi(x') - phi(x_t)||_2 on the decoder's grid
    clean_feature_distance: float | None = None # mean ||phi(x) - phi(x_t)||_2
    natural_distance: float | None = None       # mean grid distance between different clean images
    transfer_model: str | None = None
    transfer_success_rate: float | None = None
    transfer_bleu_to_target: float | None = None

    def check(self) -> None:
        """A known strategy, a mask of n entries whose share is the success rate, and transfer fields together."""
        super().check()
        if self.strategy not in self.strategies:
            raise RowSchemaError(f"caption row: metrics.strategy must be one of {list(self.strategies)}, "
                                 f"got {self.strategy!r}")
        self._mask("success_mask", self.success_mask)
        self._share("success_rate", self.success_rate, self.success_mask)
        if (self.transfer_model is None) != (self.transfer_success_rate is None):
            raise RowSchemaError("caption row: metrics.transfer_model and metrics.transfer_success_rate go together")
