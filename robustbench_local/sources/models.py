"""The harness's entry point for the user's own model: an ONNX file, or a torch class + safe weights.

:func:`load_user_model` builds the module, folds the configured preprocessing in, and checks it
against the data set (channels, image size, number of classes) before any attack runs, so a
mismatch is one line naming both sides instead of a shape error deep inside an attack.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from rbl_core.io import sha256_json
from robustbench_local.sources.checkpoints import load_state_dict
from robustbench_local.sources.errors import ModelSourceError
from robustbench_local.sources.onnx_source import check_graph_input, load_onnx_source
from robustbench_local.sources.preprocessing import Preprocessed

__all__ = ["ModelInfo", "LoadedModel", "load_user_model", "zoo_info", "USER_SOURCES"]

USER_SOURCES = ("onnx", "torch")


@dataclass(frozen=True)
class ModelInfo:
    """Where an evaluated model came from, recorded beside its results."""

    name: str
    source: str          # "zoo" | "onnx" | "torch" | "python" (a module handed to api.benchmark)
    architecture: str    # the class name, or "onnx: <n> nodes (<op types>)"
    parameters: int      # parameters of the module (ONNX: floating-point initializer elements)
    training: str        # "recipe <hash12>" for zoo models, "external" for the user's files
    description: str
    identity: str        # "sha256:<hex>": of the recipe, the ONNX file, or weights + target + kwargs
    notes: str = ""      # what attacks should know, e.g. "the graph's final Softmax is removed: ..."

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain (JSON-ready) dict."""
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    """An eval-mode module (preprocessing folded in) and the :class:`ModelInfo` describing it."""

    module: nn.Module
    info: ModelInfo


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def zoo_info(recipe: Any, module: nn.Module) -> ModelInfo:
    """ModelInfo of a zoo ``recipe`` (a ``zoo.recipes.Recipe``), parameters counted on its loaded ``module``."""
    digest = recipe.hash()
    return ModelInfo(name=recipe.name, source="zoo", architecture=recipe.architecture,
                     parameters=_count_parameters(module), training=f"recipe {digest[:12]}",
                     description=recipe.description, identity=f"sha256:{digest}")


def _channels(n: int) -> str:
    return f"{n} channel{'' if n == 1 else 's'}"


def _require(cfg: Mapping[str, Any], key: str, source: str, what: str) -> str:
    value = cfg.get(key)
    if not value:
        raise ModelSourceError(f"model {cfg.get('name')!r}: source={source} needs model.{key} ({what})")
    return str(value)


# ---- the two sources --------------------------------------------------------------------------------

def _load_onnx_source(cfg: Mapping[str, Any], input_shape: tuple[int, int, int]) -> tuple[nn.Module, ModelInfo]:
    path = Path(_require(cfg, "path", "onnx", "the .onnx file"))
    size = cfg.get("input_size")
    chw = tuple(int(v) for v in size) if size is not None and len(size) == 3 else tuple(input_shape)
    module, graph, notes = load_onnx_source(cfg, str(path), chw)
    check_graph_input(graph, cfg, tuple(input_shape))
    ops = ", ".join(sorted(set(graph.op_types)))
    info = ModelInfo(name=str(cfg.get("name")), source="onnx", architecture=f"onnx: {graph.num_nodes} nodes ({ops})",
                     parameters=graph.num_weights, training="external", description=str(cfg.get("description") or ""),
                     identity=f"sha256:{_sha256_file(path)}", notes="; ".join(notes))
    return module, info


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
    if not module_name or not attr:
        raise ModelSourceError(f"model.target {target!r} must look like 'package.module:Class'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ModelSourceError(f"model.target {target!r} cannot be imported ({type(err).__name__}: {err}); "
                               "is its package installed or on PYTHONPATH?") from err


def _fit_state_dict(net: nn.Module, state: dict[str, torch.Tensor], weights: Path, target: str) -> None:
    """``net.load_state_dict(state, strict=True)``, with a one-line summary of what does not fit."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in sorted(set(own) & set(state))
              if state[k].shape != own[k].shape]

    def few(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

    problems = ([f"missing keys {few(missing)}"] if missing else []) + \
               ([f"unexpected keys {few(unexpected)}"] if unexpected else []) + \
               ([f"shape mismatch (checkpoint vs model) {few(shapes)}"] if shapes else [])
    if problems:
        raise ModelSourceError(f"weights {weights} do not fit {target}: {'; '.join(problems)}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelSourceError(f"weights {weights} do not fit {target}: {str(err).splitlines()[0]}") from err


def _load_torch_source(cfg: Mapping[str, Any]) -> tuple[nn.Module, ModelInfo]:
    target = _require(cfg, "target", "torch", "'package.module:Class'")
    weights = Path(_require(cfg, "weights", "torch", "a .safetensors file or a .pt/.pth state_dict"))
    kwargs = dict(cfg.get("kwargs") or {})
    state = load_state_dict(weights)   # first: a missing or unsafe file is reported before any user code runs
    factory = _import_target(target)
    try:
        net = factory(**kwargs)
    except Exception as err:  # the user's constructor: any exception means "these kwargs do not build it"
        raise ModelSourceError(f"model.target {target!r} could not be built with kwargs {kwargs} "
                               f"({type(err).__name__}: {err})") from err
    if not isinstance(net, nn.Module):
        raise ModelSourceError(f"model.target {target!r} returned a {type(net).__name__}, not a torch nn.Module")
    _fit_state_dict(net, state, weights, target)
    # A factory function (e.g. rbl_core.architectures:build) returns a generic class; name both.
    cls = type(net).__name__
    architecture = cls if isinstance(factory, type) else f"{cls} (built by {target})"
    identity = sha256_json({"weights": _sha256_file(weights), "target": target, "kwargs": kwargs})
    info = ModelInfo(name=str(cfg.get("name")), source="torch", architecture=architecture,
                     parameters=_count_parameters(net), training="external",
                     description=str(cfg.get("description") or ""), identity=f"sha256:{identity}")
    return net.eval(), info


# ---- checks against the data set ---------------------------------------------------------------------

def _check_against_data(module: nn.Module, cfg: Mapping[str, Any],
                        input_shape: tuple[int, int, int], num_classes: int) -> None:
    """Channels, image size and output width of ``module`` vs the data's ``input_shape`` / ``num_classes``."""
    name = cfg.get("name")
    c, h, w = (int(s) for s in input_shape)
    data = f"the data have shape [{c}, {h}, {w}]"
    size = cfg.get("input_size")
    if size is not None:
        if int(size[0]) != c:
            raise ModelSourceError(f"model {name!r} expects {_channels(int(size[0]))} (input_size {list(size)}) "
                                   f"but {data}")
    probe = torch.zeros(2, c, h, w)
    try:
        with torch.no_grad():
            out = module(probe)
    except RuntimeError as err:
        fed = (f"resized to input_size {list(size)}" if size is not None
               else "fed at the data's size; set model.input_size to resize")
        raise ModelSourceError(f"model {name!r} cannot take the data's images: a batch of shape {list(probe.shape)} "
                               f"({fed}) fails with: {str(err).strip().splitlines()[0]}") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelSourceError(f"model {name!r} returns {shape} for a batch of 2; expected logits (N, classes) = "
                               f"[2, {num_classes}]")
    if out.shape[1] != num_classes:
        raise ModelSourceError(f"model {name!r} outputs {out.shape[1]} classes (logits {list(out.shape)}) but the "
                               f"data set has {num_classes} classes")


def load_user_model(model_cfg: Mapping[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> LoadedModel:
    """Load the ``model`` config's ONNX file or torch class + weights, preprocessing folded in, checked vs the data."""
    source = model_cfg.get("source")
    if source == "onnx":
        net, info = _load_onnx_source(model_cfg, tuple(input_shape))
    elif source == "torch":
        net, info = _load_torch_source(model_cfg)
    else:
        raise ModelSourceError(f"model {model_cfg.get('name')!r}: load_user_model loads sources {list(USER_SOURCES)}, "
                               f"not {source!r} (zoo models come from robustbench_local.zoo.load_model)")
    size = model_cfg.get("input_size")
    if size is not None and (len(size) != 3 or any(int(v) < 1 for v in size)):
        raise ModelSourceError(f"model {model_cfg.get('name')!r}: input_size {list(size)} must be [C, H, W] "
                               "with positive sizes")
    module = Preprocessed(net, input_size=None if size is None else tuple(size)[1:],
                          channel_order=str(model_cfg.get("channel_order") or "RGB"),
                          mean=model_cfg.get("mean"), std=model_cfg.get("std"), channels=int(input_shape[0])).eval()
    _check_against_data(module, model_cfg, tuple(input_shape), int(num_classes))
    return LoadedModel(module, info)
