"""Schema of the root config and its dataset / model / attack / defense groups (``conf/config.yaml``).

The root schema types every group node, so a group file (``conf/dataset/*.yaml`` ...) needs no defaults
line of its own: it is merged into a typed node and checked there. ``task`` stays ``Any`` at the root;
each ``conf/task/<name>.yaml`` extends its own schema (see ``tasks.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from rbl_core.config import ranged
from rbl_core.device import resolve_device
from robustbench_local.config_schema.rules import join, section
from robustbench_local.data import DATASETS
from robustbench_local.errors import ConfigError
from robustbench_local.results import DEFAULT_URL
from robustbench_local.results.spool import DEFAULT_SPOOL
from rbl_core.threat import Norm

NORMS = tuple(n.value for n in Norm)


def run_device(cfg: DictConfig) -> torch.device:
    """The one device of a run: ``cfg.device`` resolved, and the CPU for a task that computes only there.

    A task's schema states ``on_device = True`` once its model, data and attacks all follow the device;
    ``auto`` then picks the best the task can use, while an explicit GPU for a CPU-only task is an error,
    so no row ever claims a GPU it did not use.
    """
    device = resolve_device(cfg.device)   # DeviceError (a user error) for a bad string or a missing GPU
    if device.type == "cpu" or getattr(OmegaConf.get_type(cfg.get("task")), "on_device", False):
        return device
    if str(cfg.device).strip().lower() == "auto":
        return torch.device("cpu")
    raise ConfigError(f"device={cfg.device}: this task runs on the CPU only so far; use device=cpu or device=auto")


@dataclass
class ThreatConfig:
    """``threat``: the norm ball attacks must stay in."""

    norm: str = ranged("Linf", choices=NORMS)   # Linf | L2 | L1 | L0
    eps: float | None = ranged(0.1, ge=0)   # null: unbounded (minimisation attacks)


@dataclass
class ResultsConfig:
    """``results``: where rows and resumable per-batch state go."""

    url: str = DEFAULT_URL               # any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db
    state_dir: str = "results/state"     # per-batch evaluation state for resuming
    spool: str = DEFAULT_SPOOL           # rows kept here when the store fails mid-run; the next run imports them


DATASET_NAMES = DATASETS
MODEL_SOURCES = ("zoo", "onnx", "torch", "python")   # python: a module handed to api.benchmark


@dataclass
class DatasetConfig:
    """``dataset`` group: a built-in set (read from ``root``) or the user's own (``folder`` / ``npz`` at ``path``)."""

    name: str = ranged(MISSING, choices=DATASET_NAMES)
    root: str | None = None
    path: str | None = None            # folder / npz: the image folder or the .npz file
    n_test: int | None = ranged(None, ge=1)
    size: int | None = ranged(None, ge=1)

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """``folder`` / ``npz`` need ``path``; the built-in sets read ``root``, so a ``path`` there would be ignored."""
        if OmegaConf.is_missing(node, "name"):
            return   # reported by check_node as "dataset.name is missing"
        has_path = node.path not in (None, "")
        if node.name in ("folder", "npz") and not has_path:
            what = "DIR (a folder with one subfolder of images per class)" if node.name == "folder" else "FILE.npz"
            raise ConfigError(f"{join(key, 'path')} is required for dataset={node.name}: give {join(key, 'path')}={what}")
        if node.name not in ("folder", "npz") and has_path:
            raise ConfigError(f"{join(key, 'path')} is read only by dataset=folder / dataset=npz; "
                              f"dataset={node.name} reads {join(key, 'root')}")


@dataclass
class ModelConfig:
    """``model`` group: a zoo recipe, an ONNX file, or a torch class with safe weights."""

    name: str = MISSING                # zoo recipe name, or the name the user's model is listed under
    source: str = ranged("zoo", choices=MODEL_SOURCES)
    path: str | None = None            # onnx: the .onnx file
    target: str | None = None          # torch: "package.module:Class"
    kwargs: Any = None   # torch: constructor arguments, a mapping (null = none); Any so one override sets it whole
    weights: str | None = None         # torch: .safetensors, or a .pt/.pth state_dict (weights_only)
    input_size: Optional[List[int]] = None   # [C, H, W] the model expects; null = the data's own shape
    channel_order: str = ranged("RGB", choices=("RGB", "BGR"))
    input_layout: str = ranged("nchw", choices=("nchw", "nhwc", "flat"))   # onnx: what the graph's input is
    mean: Optional[List[float]] = None        # per-channel normalisation folded into the model
    std: Optional[List[float]] = None
    description: str = ""

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """Each source's own keys are given: onnx needs ``path``; torch needs ``target`` and ``weights``."""
        need = {"onnx": ("path",), "torch": ("target", "weights")}.get(node.source, ())
        missing = [k for k in need if node[k] in (None, "")]
        if missing:
            keys = " and ".join(join(key, k) for k in missing)
            raise ConfigError(f"{keys} {'is' if len(missing) == 1 else 'are'} required for {join(key, 'source')}"
                              f"={node.source}")
        if node.kwargs is not None and not OmegaConf.is_dict(node.kwargs):
            raise ConfigError(f"{join(key, 'kwargs')} must be a mapping such as {{width:64}}, got {node.kwargs!r}")


@dataclass
class AttackConfig:
    """``attack`` group: name -> Hydra ``_target_`` spec of an EvasionAttack (null drops an inherited entry)."""

    attacks: Dict[str, Any] = ranged({})


@dataclass
class DefenseConfig:
    """``defense`` group: a name for the results and an optional ``_target_`` wrapper(model) -> nn.Module."""

    name: str = "none"
    wrapper: Any = None

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """A built-in wrapper's parameters are in range and fit the data set (JPEG quality, RGB only, ...)."""
        from robustbench_local.defense_wrappers import check_wrapper   # imports the defense libraries

        check_wrapper(node.wrapper, join(key, "wrapper"))


@dataclass
class RootConfig:
    """The whole ``rbl`` config; ``task`` is typed by the selected task's own schema."""

    dataset: DatasetConfig = section(DatasetConfig)
    model: ModelConfig = section(ModelConfig)
    attack: AttackConfig = section(AttackConfig)
    defense: DefenseConfig = section(DefenseConfig)
    task: Any = None
    seed: int = ranged(0, ge=0)
    device: str = "cpu"                   # cpu | cuda | cuda:N | auto; rows record the device that ran
    # One intra-op thread per process is much faster for small models; parallelise across processes.
    torch_threads: int = ranged(1, ge=1)
    batch_size: int = ranged(200, ge=1)   # attack batch; also the unit of resumable state
    workers: int = ranged(2, ge=1)        # evaluation processes (one torch thread each); use 1 inside parallel sweeps
    progress: bool = True
    cache_dir: str | None = None          # zoo weights; null = $RBL_CACHE_DIR or ~/.cache/robustbench_local
    threat: ThreatConfig = section(ThreatConfig)
    results: ResultsConfig = section(ResultsConfig)

    @staticmethod
    def check_values(node: DictConfig, key: str) -> None:
        """``device`` names a device this machine has and the task can use, before any work."""
        run_device(node)
