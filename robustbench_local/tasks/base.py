"""What every task receives: resolved paths, device, seed, and loaders for the configured data and model."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from robustbench_local.data import DataSplit, load_dataset
from robustbench_local.config_schema.root import run_device
from robustbench_local.data_user import USER_DATASETS, data_identity
from rbl_core.device import describe_device
from rbl_core.threat import ThreatModel
from robustbench_local.errors import ConfigError
from robustbench_local.results import ResultRow, ResultsStore
from robustbench_local.sources.models import LoadedModel, ModelInfo, load_user_model, zoo_info
from robustbench_local.zoo import get_recipe, load_model

# The parts of a composed config that identify what a task computed. Workers, threads, progress bars,
# paths and the results URL change how a run goes, never its numbers, so they stay out of the key.
IDENTIFYING = ("dataset", "model", "defense", "attack", "threat", "task", "seed", "batch_size", "device")


def _optional_path(value: object) -> Path | None:
    return Path(str(value)).expanduser() if value not in (None, "") else None


@dataclass
class TaskContext:
    """Resolved run settings plus the configured data set and model."""

    cfg: DictConfig
    data_root: Path | None
    cache_dir: Path | None
    output_dir: Path
    device: torch.device
    seed: int
    batch_size: int
    loaded: LoadedModel | None = field(default=None, repr=False)   # the bare model once loaded (or given)
    store: ResultsStore | None = field(default=None, repr=False)   # the run's open store (set by api.run_task)

    @classmethod
    def from_config(cls, cfg: DictConfig, output_dir: Path) -> "TaskContext":
        """The context ``rbl`` gives a task for a composed config, writing files to ``output_dir``."""
        return cls(cfg=cfg, data_root=_optional_path(cfg.dataset.root),
                   cache_dir=_optional_path(cfg.cache_dir), output_dir=Path(output_dir),
                   device=run_device(cfg), seed=int(cfg.seed), batch_size=int(cfg.batch_size))

    def load_data(self, split: str = "test", n: int | None = None) -> DataSplit:
        """Split ``split`` of ``cfg.dataset`` (first ``n`` examples if given)."""
        ds = self.cfg.dataset
        return load_dataset(ds.name, split, root=self.data_root, n=n, size=ds.size, path=ds.path, seed=self.seed)

    @property
    def dataset_label(self) -> str:
        """The data set as rows name it: a built-in name, or ``folder:<name>@<content hash>`` for the user's data.

        Two different folders (or .npz files) never share a label, so their rows never merge.
        """
        ds = self.cfg.dataset
        if ds.name not in USER_DATASETS:
            return str(ds.name)
        return f"{ds.name}:{Path(str(ds.path)).stem}@{self.data_identity[:8]}"

    @cached_property
    def data_identity(self) -> str:
        """Content hash of the user's folder or .npz file, read once per context (every row records it)."""
        return data_identity(self.cfg.dataset.path)

    def _load_bare_model(self) -> LoadedModel:
        """``cfg.model`` from its source (zoo recipe, ONNX file, torch class + weights), checked against the data."""
        m = self.cfg.model
        if m.source == "zoo":
            threat = self.cfg.threat.norm
            module = load_model(m.name, self.cfg.dataset.name, threat_model=None if threat in ("L0", "L1") else threat,
                                cache_dir=self.cache_dir, data_root=self.data_root)
            return LoadedModel(module, zoo_info(get_recipe(m.name, self.cfg.dataset.name), module))
        if m.source == "python":
            raise ConfigError("model.source=python is for a module handed to robustbench_local.api.benchmark; "
                              "from rbl choose model=onnx or model=torch (or a zoo recipe)")
        data = self.load_data("test", n=1)   # one example gives the shape; num_classes is the whole set's
        return load_user_model(OmegaConf.to_container(m, resolve=True), data.input_shape, data.num_classes)

    def bare_model(self) -> LoadedModel:
        """The configured model without any defense wrapper, loaded once per context and on ``device``."""
        if self.loaded is None:
            loaded = self._load_bare_model()
            self.loaded = LoadedModel(loaded.module.to(self.device), loaded.info)
        return self.loaded

    @property
    def model_info(self) -> ModelInfo:
        """Where the model came from (name, source, architecture, parameters, training, identity)."""
        return self.bare_model().info

    def load_model(self) -> nn.Module:
        """``cfg.model`` from its source, wrapped by ``cfg.defense`` if one is set (eval mode)."""
        model = self.bare_model().module
        wrapper = self.cfg.defense.wrapper
        if wrapper is not None:
            model = instantiate(wrapper, _partial_=True)(model).to(self.device).eval()
        return model

    def run_config(self, *sections: str, **extra: object) -> dict:
        """The idempotency key of a row: the named config ``sections`` (default: all identifying ones) + ``extra``.

        Also records the model's identity (zoo recipe hash, or the hash of the user's files), so rows of two
        different trainings or checkpoints under one name never merge, and a device other than the CPU.
        """
        chosen = sections or IDENTIFYING
        unknown = [s for s in chosen if s not in IDENTIFYING]
        if unknown:
            raise ValueError(f"run_config: {unknown} are not identifying config sections {IDENTIFYING}")
        config = {s: OmegaConf.to_container(self.cfg[s], resolve=True) if isinstance(self.cfg.get(s), DictConfig)
                  else self.cfg.get(s) for s in chosen if s in self.cfg}
        # What ran (auto resolved), never merely what was asked for. Off the CPU always, so a GPU run's rows and
        # resumable state never merge with a CPU run's; the keys of CPU runs stay as they always were.
        if "device" in config or self.device.type != "cpu":
            config["device"] = str(self.device)
        if "model" in chosen:
            config["model_identity"] = self.model_info.identity
        if "dataset" in chosen and self.cfg.dataset.name in USER_DATASETS:
            config["dataset_identity"] = self.data_identity
        return {**config, **extra}

    @property
    def defense_name(self) -> str:
        """The defense recorded in results: the wrapper's name, else the zoo recipe's ("none" for a user's model)."""
        if self.cfg.defense.name != "none":
            return str(self.cfg.defense.name)
        if self.cfg.model.source != "zoo":
            return "none"
        return get_recipe(self.cfg.model.name, self.cfg.dataset.name).defense

    def row(self, kind: str, attack: str, metrics: dict, config: dict, time_s: float, *,
            threat: ThreatModel | None = None, model_info: bool = False, **fields: Any) -> ResultRow:
        """This run's row; data set label, model, defense, seed from the context unless ``fields`` name them."""
        if threat is not None:
            fields = {"threat_model": threat.norm.value, "eps": threat.eps, **fields}
        metrics = {**metrics, **describe_device(self.device)}
        if model_info:
            metrics = {**metrics, "model_info": self.model_info.to_dict()}
        # Looked up only when a task does not name them: a captioner or a scene set has no recipe to ask.
        context = {"dataset": lambda: self.dataset_label, "model": lambda: self.cfg.model.name,
                   "defense": lambda: self.defense_name}
        fields.update({name: look_up() for name, look_up in context.items() if name not in fields})
        return ResultRow(kind=kind, attack=attack, metrics=metrics, config=config, time_s=time_s, seed=self.seed,
                         **fields)
