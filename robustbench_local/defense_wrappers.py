"""The ``defense=`` wrappers: Hydra ``_target_`` factories ``(model, **params) -> Preprocessed``.

Each factory builds its transform from a library (``defenses.input_transforms``, ``defenses.raw_isp``) and
wraps the classifier. :func:`check_wrapper` runs the same parameter checks on the config alone, so a bad
value (JPEG quality 0, an RGB-only defense on a grey data set) fails before any model loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from torch import nn

from defenses.input_transforms.bit_depth import BitDepth
from defenses.input_transforms.jpeg import JPEG
from defenses.input_transforms.median import Median
from defenses.input_transforms.wrapper import DefenseError, Preprocessed
from defenses.raw_isp.demosaic import ClassicalISP
from defenses.raw_isp.pipeline import RawISP
from robustbench_local.errors import ConfigError
from robustbench_local.zoo import ZooError, get_recipe
from robustbench_local.zoo.cache import load_or_train
from robustbench_local.zoo.recipes_raw_isp import RAW_DATASETS

GREY_DATASETS = ("digits", "mnist")


def _rgb(name: str, dataset: str | None) -> None:
    if dataset in GREY_DATASETS:
        raise DefenseError(f"defense={name} needs RGB images, but dataset={dataset} is greyscale")


def jpeg(model: nn.Module, quality: int = 75, dataset: str | None = None) -> Preprocessed:
    """JPEG compression at ``quality`` (kornia, differentiable) before ``model``."""
    _rgb("jpeg", dataset)
    return Preprocessed(model, JPEG(quality), "jpeg")


def bit_depth(model: nn.Module, bits: int = 4, dataset: str | None = None) -> Preprocessed:
    """Bit-depth reduction to ``bits`` bits (BPDA backward) before ``model``."""
    return Preprocessed(model, BitDepth(bits), "bit_depth")


def median(model: nn.Module, kernel: int = 3, dataset: str | None = None) -> Preprocessed:
    """A ``kernel`` x ``kernel`` median filter (kornia, differentiable) before ``model``."""
    return Preprocessed(model, Median(kernel), "median")


def demosaic_isp(model: nn.Module, method: str = "malvar", dataset: str | None = None) -> Preprocessed:
    """The synthetic camera's RAW, classical demosaicing and the forward ISP before ``model``."""
    _rgb("demosaic_isp", dataset)
    return Preprocessed(model, ClassicalISP(method), "demosaic_isp")


def _check_raw(dataset: str | None, operators: str = "raw_isp") -> None:
    _rgb("raw_isp", dataset)
    if dataset is not None and dataset not in RAW_DATASETS:
        raise DefenseError(f"defense=raw_isp has trained F and G for {list(RAW_DATASETS)}, not dataset={dataset}")
    if dataset is not None:
        for part in ("f", "g"):
            try:
                get_recipe(f"{operators}_{part}", dataset)
            except ZooError as err:
                raise DefenseError(f"defense=raw_isp operators={operators!r}: {err}") from None


def raw_isp(model: nn.Module, dataset: str, noise: bool = False, eot_samples: int = 8,
            cache_dir: str | None = None, data_root: str | None = None, operators: str = "raw_isp") -> Preprocessed:
    """G(F(x)) before ``model``, F and G the zoo's recipes ``<operators>_f`` / ``_g`` for ``dataset`` (trained once)."""
    _check_raw(dataset, operators)
    if eot_samples < 1:
        raise DefenseError(f"raw_isp eot_samples must be >= 1, got {eot_samples}")
    cache = Path(cache_dir).expanduser() if cache_dir else None
    f = load_or_train(get_recipe(f"{operators}_f", dataset), cache, data_root)
    g = load_or_train(get_recipe(f"{operators}_g", dataset), cache, data_root)
    wrapped = Preprocessed(model, RawISP(f, g, noise=noise), "raw_isp")
    wrapped.eot_samples = int(eot_samples)
    return wrapped


# The checks each factory makes before it builds anything heavy, run on the config alone.
_CHECKS: dict[str, Callable[..., Any]] = {
    "jpeg": lambda quality=75, dataset=None: (_rgb("jpeg", dataset), JPEG(quality)),
    "bit_depth": lambda bits=4, dataset=None: BitDepth(bits),
    "median": lambda kernel=3, dataset=None: Median(kernel),
    "demosaic_isp": lambda method="malvar", dataset=None: (_rgb("demosaic_isp", dataset), ClassicalISP(method)),
    "raw_isp": lambda dataset=None, noise=False, eot_samples=8, cache_dir=None, data_root=None, operators="raw_isp":
        _check_raw(dataset, operators),
}


def check_wrapper(wrapper: Any, key: str) -> None:
    """Raise ConfigError (naming ``key``) if a known wrapper's parameters are out of range for the data set."""
    if not isinstance(wrapper, DictConfig):
        return
    target = str(wrapper.get("_target_", ""))
    module, _, name = target.rpartition(".")
    if module != __name__ or name not in _CHECKS:
        return
    params = {k: v for k, v in OmegaConf.to_container(wrapper, resolve=True).items() if not k.startswith("_")}
    try:
        _CHECKS[name](**params)
    except DefenseError as err:
        raise ConfigError(f"{key}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"{key}: {err}") from None
