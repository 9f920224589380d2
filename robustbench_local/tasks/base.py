"""What every task receives: resolved paths, device, seed, and loaders for the configured data and model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from robustbench_local.data import DataSplit, load_dataset
from robustbench_local.zoo import get_recipe, load_model

# The parts of a composed config that identify what a task computed. Workers, threads, progress bars,
# paths and the results URL change how a run goes, never its numbers, so they stay out of the key.
IDENTIFYING = ("dataset", "model", "defense", "attack", "threat", "task", "seed", "batch_size", "device")


class ConfigError(ValueError):
    """A config key is missing or has a value the suite cannot use."""


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

    @classmethod
    def from_config(cls, cfg: DictConfig, output_dir: Path) -> "TaskContext":
        """The context ``rbl`` gives a task for a composed config, writing files to ``output_dir``."""
        return cls(cfg=cfg, data_root=_optional_path(cfg.dataset.root),
                   cache_dir=_optional_path(cfg.cache_dir), output_dir=Path(output_dir),
                   device=torch.device(str(cfg.device)), seed=int(cfg.seed), batch_size=int(cfg.batch_size))

    def load_data(self, split: str = "test", n: int | None = None) -> DataSplit:
        """Split ``split`` of ``cfg.dataset`` (first ``n`` examples if given)."""
        ds = self.cfg.dataset
        return load_dataset(ds.name, split, root=self.data_root, n=n, size=ds.size)

    def load_model(self) -> nn.Module:
        """``cfg.model`` trained on ``cfg.dataset`` from the zoo, wrapped by ``cfg.defense`` if one is set."""
        threat = self.cfg.threat.norm
        model = load_model(self.cfg.model.name, self.cfg.dataset.name, threat_model=None if threat in (None, "L0", "L1") else threat,
                           cache_dir=self.cache_dir, data_root=self.data_root)
        wrapper = self.cfg.defense.wrapper
        if wrapper is not None:
            model = instantiate(wrapper, _partial_=True)(model).eval()
        return model

    def run_config(self, *sections: str, **extra: object) -> dict:
        """The idempotency key of a row: the named config ``sections`` (default: all identifying ones) + ``extra``.

        Also records the zoo recipe hash, so rows of two different trainings of one name never merge.
        """
        chosen = sections or IDENTIFYING
        unknown = [s for s in chosen if s not in IDENTIFYING]
        if unknown:
            raise ValueError(f"run_config: {unknown} are not identifying config sections {IDENTIFYING}")
        config = {s: OmegaConf.to_container(self.cfg[s], resolve=True) if isinstance(self.cfg.get(s), DictConfig)
                  else self.cfg.get(s) for s in chosen if s in self.cfg}
        if "model" in chosen and "dataset" in chosen:
            config["model_recipe"] = get_recipe(self.cfg.model.name, self.cfg.dataset.name).hash()
        return {**config, **extra}

    @property
    def defense_name(self) -> str:
        """The defense recorded in results: the wrapper's name, else the zoo recipe's."""
        if self.cfg.defense.name != "none":
            return str(self.cfg.defense.name)
        return get_recipe(self.cfg.model.name, self.cfg.dataset.name).defense
