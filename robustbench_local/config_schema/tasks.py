"""One schema per ``conf/task/<name>.yaml``, holding every default; the YAML only extends it.

A section that a method library configures is that library's own dataclass (its fields carry their ranges,
``rbl_core.config.ranged``); a subclass here adds only the keys the harness reads itself. A class's optional
``check_values(node, key)`` holds the checks one field's range cannot express.
Mappings keyed by data (attack names, data set names) default to ``{}`` and get their entries from the
YAML only: OmegaConf merges mappings key by key, so an entry in a schema default could never be removed
by editing the YAML.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List

from omegaconf import DictConfig

from attacks.caption.gan import GANConfig
from attacks.fooling.cppn import CPPNMutationRates
from attacks.fooling.gradient_ascent import GradientAscentSettings
from attacks.fooling.map_elites import MapElitesSettings
from attacks.fooling.result import DEFAULT_THRESHOLDS
from attacks.fooling.retraining import RetrainingConfig
from attacks.unlearnable.evaluation import CUDA_TRAININGS, VictimRecipe
from attacks.unlearnable.unlearnable import CudaKernels
from rbl_core.config import CONFIDENCE, PROBABILITY, ranged
from robustbench_local.config_schema.root import NORMS
from robustbench_local.config_schema.rules import fail, join, section
from robustbench_local.data_scenes import DIGIT_SCENE_SETS
from robustbench_local.errors import ConfigError


@dataclass
class EvaluateTask:
    """``task=evaluate``: robust accuracy under ``attack.attacks``."""

    _target_: str = "robustbench_local.tasks.evaluate.run"
    on_device: ClassVar[bool] = True   # model, data and attacks follow `device` (config_schema.root.run_device)
    print_leaderboard: bool = True   # print the leaderboard for this dataset and threat model afterwards


@dataclass
class CertifyTask:
    """``task=certify``: prove local robustness of test points with verify."""

    _target_: str = "robustbench_local.tasks.certify.run"
    n: int | None = ranged(None, ge=1)     # test points (null = dataset.n_test, so rows line up with task=evaluate)
    timeout: float = ranged(30.0, gt=0)    # seconds per point; a point not decided in time counts as unknown
    method: str = ranged("auto", choices=("auto", "bounds", "input_split", "relu_split"))
    workers: int = ranged(2, ge=1)         # processes (one point each)
    # PGD on the same points (0 = off); a certified point it breaks is an error (unsound proof)
    pgd_steps: int = ranged(50, ge=0)
    # the verifier's sampling/PGD search before splitting (false: method=bounds is one bound per point)
    falsify: bool = True


@dataclass
class VnncompTask:
    """``task=vnncomp``: verify the instances of a VNN-COMP CSV."""

    _target_: str = "robustbench_local.tasks.vnncomp.run"
    csv: str = "../shared/benchmarks/acasxu/instances.csv"   # relative to the repository (or absolute)
    timeout: float | None = ranged(60.0, gt=0)   # seconds per instance (null = the CSV's own column)
    limit: int | None = ranged(None, ge=1)       # only the first N instances
    workers: int = ranged(2, ge=1)               # processes (one instance each)


@dataclass
class LeaderboardTask:
    """``task=leaderboard``: render the results database."""

    _target_: str = "robustbench_local.tasks.leaderboard.run"
    kind: str = ranged("robustness", choices=("robustness", "caption"))   # caption: the caption-attack board
    dataset: str | None = None         # filter, e.g. digits
    threat_model: str | None = None    # filter, e.g. Linf
    sort_by: str = ranged("robust_acc", choices=("robust_acc", "clean_acc", "autoattack_acc", "certified_acc",
                                                 "time_s"))
    csv: str | None = None             # write CSV here
    html: str | None = None            # write one self-contained HTML file here
    json_dir: str | None = None        # write one RobustBench-style JSON per entry here


@dataclass
class ListModelsTask:
    """``task=list_models``: print the model zoo."""

    _target_: str = "robustbench_local.tasks.list_models.run"
    dataset: str | None = None   # filter, e.g. mnist


@dataclass
class ImportRowsTask:
    """``task=import_rows``: load a spool file of rows into the results database."""

    _target_: str = "robustbench_local.tasks.import_rows.run"
    path: str | None = None   # null: the default spool next to the results DB


@dataclass
class CurveTask:
    """``task=curve``: robust accuracy as a function of eps from one run of each attack."""

    _target_: str = "robustbench_local.tasks.curve.run"
    on_device: ClassVar[bool] = True
    epsilons: List[float] = ranged([0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3], nonempty=True, ge=0)


@dataclass
class SweepStatusTask:
    """``task=sweep_status``: the sweep jobs recorded in the results database."""

    _target_: str = "robustbench_local.tasks.sweep_status.run"
    status: str | None = ranged(None, choices=("ok", "failed", "running"))   # running: no outcome recorded


@dataclass
class AtEpsSection:
    """``task.at_eps``: adversarial-training budgets per norm (images in [0, 1])."""

    Linf: float | None = ranged(0.0157, gt=0)   # 4/255, as in the paper's CIFAR AT runs
    L2: float | None = ranged(0.25, gt=0)




@dataclass
class CudaPoisonTask:
    """``task=unlearnable_poison``: CUDA unlearnable data, poison then train."""

    _target_: str = "robustbench_local.tasks.unlearnable_poison.run"
    on_device: ClassVar[bool] = True
    n_train: int | None = ranged(None, ge=1)   # first n training images (null = the whole training split)
    cuda: CudaKernels = section(CudaKernels)
    mixes: List[float] = ranged([1.0], nonempty=True, **PROBABILITY)   # poisoned fractions of the training set
    trainings: List[str] = ranged(["erm"], nonempty=True, choices=tuple(CUDA_TRAININGS))
    augment: List[bool] = ranged([False], nonempty=True)   # random shift + flip inside training, after poisoning
    controls: bool = True                      # one-kernel control and the class-kernel oracle
    at_eps: AtEpsSection = section(AtEpsSection)
    victim: VictimRecipe = section(VictimRecipe)
    save_poisoned: bool = True                 # write the released poisoned training set (.npz) into the run dir

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """Odd kernels (even ones cannot keep the image size); each adversarial training listed needs its budget."""
        if node.cuda.kernel_size % 2 == 0:
            raise fail(join(join(key, "cuda"), "kernel_size"), "an odd integer >= 3", node.cuda.kernel_size)
        for training in node.trainings:
            norm = CUDA_TRAININGS[training]
            if norm is not None and node.at_eps[norm] is None:
                raise fail(join(join(key, "at_eps"), norm), f"> 0 ({join(key, 'trainings')} has {training})", None)


@dataclass
class TransferabilitySection:
    """``task.transferability``: the sub-models' pairwise PGD transfer matrix."""

    eps: float = ranged(0.1, gt=0, le=1)   # paper: 0.03 on CIFAR-10; override per data set
    steps: int = ranged(20, ge=1)          # paper: 50 (step eps/5)
    restarts: int = ranged(2, ge=1)        # paper: 5
    n: int | None = ranged(300, ge=1)      # correctly classified images used (paper: 1000)


@dataclass
class DvergeEvalTask:
    """``task=dverge_eval``: transfer attacks from hold-out ensembles, and the transferability matrix."""

    _target_: str = "robustbench_local.tasks.dverge_eval.run"
    on_device: ClassVar[bool] = True
    n_eval: int | None = ranged(500, ge=1)     # first n test images (null = dataset.n_test, then the whole split)
    # hold-out baseline ensembles (other seeds); paper: 3, 5 and 8 members
    surrogates: List[str] = ranged(["surrogate_ens3_cnn"], nonempty=True)
    eps: List[float] | None = ranged(None, nonempty=True, gt=0, le=1)   # Linf eps; null = eps_by_dataset[dataset]
    eps_by_dataset: Dict[str, List[float]] = ranged({}, gt=0, le=1)   # dataset name -> Linf eps list
    steps: int = ranged(20, ge=1)              # paper: 100 per attack
    restarts: int = ranged(2, ge=1)            # random starts of the momentum attacks (paper: 3)
    transferability: TransferabilitySection = section(TransferabilitySection)


_COMPARED_KEYS = ("access", "norm", "eps", "attack")


@dataclass
class FeatureGuidedCompareTask:
    """``task=feature_guided_compare``: the feature-guided game against white- and black-box baselines."""

    _target_: str = "robustbench_local.tasks.feature_guided_compare.run"
    n_images: int = ranged(20, ge=1)   # first n correctly classified images of the test split
    pool: int = ranged(200, ge=1)      # test images scanned for them
    eps_by_dataset: Dict[str, Dict[str, float]] = ranged({}, ge=0)   # attack -> dataset -> eps
    # Entries stay untyped so one can be dropped (null) or have a key deleted (~) from the command line.
    attacks: Dict[str, Any] = ranged({})

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """Each entry: known keys, a norm, an eps (null, >= 0 or by_dataset) and an attack spec."""
        for name, spec in node.attacks.items():
            where = join(join(key, "attacks"), name)
            if spec is None:
                continue
            if not isinstance(spec, DictConfig):
                raise fail(where, "a mapping with keys " + ", ".join(_COMPARED_KEYS), spec)
            unknown = [k for k in spec if k not in _COMPARED_KEYS]
            if unknown:
                raise ConfigError(f"{join(where, unknown[0])} is not a key of {where}; its keys are: "
                                  + ", ".join(_COMPARED_KEYS))
            if spec.get("norm") not in NORMS:
                raise fail(join(where, "norm"), "one of " + ", ".join(NORMS), spec.get("norm"))
            eps = spec.get("eps")
            if not (eps is None or eps == "by_dataset" or (isinstance(eps, (int, float)) and eps >= 0)):
                raise fail(join(where, "eps"), "null, a number >= 0 or by_dataset", eps)
            if not isinstance(spec.get("attack"), DictConfig) or "_target_" not in spec.attack:
                raise fail(join(where, "attack"), "a mapping with a _target_ building an EvasionAttack",
                           spec.get("attack"))


# --------------------------------------------------------------------------- fooling images
@dataclass
class GradientAscentSection(GradientAscentSettings):
    """``task.gradient_ascent``: the library's settings plus the centre the decay pulls toward."""

    # the mean training image (as the reference), or a grey level; int too: OmegaConf would not turn
    # center=1 into a float inside a Union
    center: str | int | float = "mean"

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """The reference blur limit, and the decay centre: the mean image or a grey level."""
        if 0 < node.blur_radius < 0.3:
            raise fail(join(key, "blur_radius"), "0 or >= 0.3", node.blur_radius)
        center = node.center
        grey = isinstance(center, (int, float)) and not isinstance(center, bool) and 0 <= center <= 1
        if center != "mean" and not grey:
            raise fail(join(key, "center"), "mean or a grey level in [0, 1]", center)


@dataclass
class RetrainingSection(RetrainingConfig):
    """``task.retraining``: the library's rounds plus the epochs of each retraining."""

    epochs: int | None = ranged(None, ge=1)   # null: the zoo recipe's epochs


_FOOLING = "robustbench_local.tasks.fooling.run"


@dataclass
class _FoolingTask:
    """Keys every fooling task takes."""

    _target_: str = _FOOLING
    thresholds: List[float] = ranged(list(DEFAULT_THRESHOLDS), **CONFIDENCE)
    log_every: int = ranged(0, ge=0)   # progress line every n generations (0 = silent; unused by gradient ascent)


@dataclass
class _DirectEncodingTask(_FoolingTask):
    """Keys of the direct (pixel) encoding's mutation and crossover."""

    mutation_rate: float = ranged(0.1, **PROBABILITY)   # per-pixel polynomial mutation probability
    eta_m: float = ranged(15.0, ge=0)                   # polynomial mutation distribution index
    eta_c: float = ranged(10.0, ge=0)                   # SBX distribution index (reference direct encoding)


@dataclass
class _MapElitesTask(_FoolingTask):
    """Keys of the MAP-Elites searches."""

    method: str = ranged("map_elites", choices=("map_elites",))
    map_elites: MapElitesSettings = section(lambda: MapElitesSettings(time_budget_s=300.0))   # 5 CPU minutes
    log_every: int = ranged(20, ge=0)


@dataclass
class FoolingMapElitesDirectTask(_MapElitesTask, _DirectEncodingTask):
    """``task=fooling_map_elites_direct``: MAP-Elites with the direct (pixel) encoding."""

    encoding: str = ranged("direct", choices=("direct",))


@dataclass
class FoolingMapElitesCppnTask(_MapElitesTask):
    """``task=fooling_map_elites_cppn``: MAP-Elites with the CPPN encoding (topologies are not recombined)."""

    encoding: str = ranged("cppn", choices=("cppn",))
    cppn_rates: CPPNMutationRates = section(CPPNMutationRates)   # the reference MNIST CPPN rates
    map_elites: MapElitesSettings = section(lambda: MapElitesSettings(cross_rate=0.0, time_budget_s=300.0))


@dataclass
class FoolingGradientAscentTask(_FoolingTask):
    """``task=fooling_gradient_ascent``: one fooling image per class by gradient ascent."""

    method: str = ranged("gradient_ascent", choices=("gradient_ascent",))
    gradient_ascent: GradientAscentSection = section(GradientAscentSection)


@dataclass
class FoolingRetrainingTask(_DirectEncodingTask):
    """``task=fooling_retraining``: evolve, add a fooling class, retrain from scratch, evolve again."""

    method: str = ranged("retraining", choices=("retraining",))
    encoding: str = ranged("direct", choices=("direct", "cppn"))
    cppn_rates: CPPNMutationRates = section(CPPNMutationRates)   # used with encoding=cppn
    retraining: RetrainingSection = section(RetrainingSection)
    # generations and time_budget_s of each MAP-Elites run
    map_elites: MapElitesSettings = section(lambda: MapElitesSettings(generations=300, time_budget_s=120.0))


@dataclass
class ContextualFusionTask:
    """``task=contextual_fusion``: fg-only, bg-only and fused digit classifiers on MNIST-on-texture scene sets."""

    _target_: str = "robustbench_local.tasks.contextual_fusion.run"
    on_device: ClassVar[bool] = True
    scene_sets: List[str] = ranged(["mnist_scenes10", "mnist_scenes50", "mnist_scenes90", "mnist_scenes_var"],
                                   nonempty=True, choices=DIGIT_SCENE_SETS)
    n_train: int = ranged(5000, ge=10)     # train images of each stream; the heads get the rest of the split
    n_test: int = ranged(500, ge=1)        # composited test images per scene set
    alpha: List[float] = ranged([0.0, 0.03], nonempty=True, ge=0)   # ||theta_fg||^2 penalty (0: fusion, 0.03: reg)
    # Linf budgets (transfer-from-fg, e2e-fg-region, e2e-whole)
    eps: List[float] = ranged([0.05, 0.1, 0.2], nonempty=True, gt=0, lt=0.5)
    sigma: List[float] = ranged([0.5, 1.0, 2.0], nonempty=True, gt=0)   # Gaussian blur standard deviations (pixels)
    epochs: int = ranged(5, ge=1)          # stream training epochs
    head_steps: int = ranged(300, ge=1)    # full-batch Adam steps of each linear head
    seed: int = ranged(0, ge=0)


@dataclass
class DefenseEvalTask:
    """``task=defense_eval``: a preprocessing defense under defense-unaware and adaptive attacks at several eps."""

    _target_: str = "robustbench_local.tasks.defense_eval.run"
    on_device: ClassVar[bool] = True
    eps: List[float] = ranged([2 / 255, 4 / 255, 8 / 255], nonempty=True, gt=0, le=1)
    unaware: bool = True            # also transfer attacks crafted on the bare classifier
    figure: bool = True             # one row of images through the pipeline per run
    print_leaderboard: bool = True


@dataclass(frozen=True)
class CaptionGANSection(GANConfig):
    """``task.gan``: the library's generator training (one generator per target and eps) plus its train scenes."""

    n_train: int = ranged(2000, ge=1)        # train scenes the generator learns on


@dataclass
class CaptionAttackTask:
    """``task=caption_attack``: GAN, PGD-feature and decoder-gradient caption attacks on a zoo captioner."""

    _target_: str = "robustbench_local.tasks.caption_attack.run"
    victim: str = "caption_attn_gru"       # zoo captioner attacked
    transfer: str = "caption_flat_lstm"    # zoo captioner that reads the same x' (a different architecture)
    attacks: List[str] = ranged(["gan", "gan_no_disc", "pgd_feature", "decoder_gradient"], nonempty=True,
                                choices=("gan", "gan_no_disc", "pgd_feature", "decoder_gradient"))
    eps: List[float] = ranged([0.1, 0.2, 0.3], nonempty=True, gt=0, le=1)   # Linf budgets
    # which strategies run (a long table can be split over two processes, one per strategy)
    strategies: List[str] = ranged(["targeted", "keyword"], nonempty=True, choices=("targeted", "keyword"))
    n_images: int = ranged(30, ge=1)         # source scenes per target
    targets: int = ranged(1, ge=1)           # target captions of the targeted strategy
    keywords: List[str] = ranged(["seven"], nonempty=True)   # keyword injection: one target scene with each
    pgd_steps: int = ranged(50, ge=1)        # steps of both PGD baselines
    beam_n: int = ranged(100, ge=1)          # clean scenes also decoded by beam search (width 3)
    figure: bool = True
    # "gan_no_disc" runs with adv_weight 0
    gan: CaptionGANSection = section(lambda: CaptionGANSection(steps=300, batch_size=16, lr=5e-3, width=16))


TASKS: dict[str, type] = {
    "caption_attack": CaptionAttackTask,
    "defense_eval": DefenseEvalTask,
    "certify": CertifyTask, "curve": CurveTask, "contextual_fusion": ContextualFusionTask, "unlearnable_poison": CudaPoisonTask, "dverge_eval": DvergeEvalTask,
    "evaluate": EvaluateTask, "feature_guided_compare": FeatureGuidedCompareTask,
    "fooling_gradient_ascent": FoolingGradientAscentTask, "fooling_map_elites_cppn": FoolingMapElitesCppnTask,
    "fooling_map_elites_direct": FoolingMapElitesDirectTask, "fooling_retraining": FoolingRetrainingTask,
    "import_rows": ImportRowsTask, "leaderboard": LeaderboardTask, "list_models": ListModelsTask,
    "sweep_status": SweepStatusTask, "vnncomp": VnncompTask,
}
