"""``model=onnx``: the core reader's graph (:mod:`rbl_core.onnx`), laid out for the data's NCHW images.

``model.input_layout`` says what the graph's input is: ``nchw`` images (the default), ``nhwc`` images
(Keras / TensorFlow exports; the images are transposed before the graph) or ``flat`` vectors (the
images are flattened; a vector of another length cannot be attacked on images and is refused). A
graph that ends in Softmax is attacked on the logits before it, and the notes say so.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from rbl_core.onnx import OnnxGraph, load_onnx
from robustbench_local.sources.errors import ModelSourceError

INPUT_LAYOUTS = ("nchw", "nhwc", "flat")
SOFTMAX_NOTE = "the graph's final Softmax is removed: attacks run on the logits before it"


class _ChannelsLast(nn.Module):
    """NCHW images in, the NHWC graph run on them."""

    def __init__(self, graph: OnnxGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's output for NCHW images ``x``."""
        return self.graph(x.permute(0, 2, 3, 1))


class _Flattened(nn.Module):
    """Images in, the graph run on each image flattened to a vector (C, H, W order)."""

    def __init__(self, graph: OnnxGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's output for images ``x``, each flattened."""
        return self.graph(x.flatten(1))


def _shown(graph: OnnxGraph) -> list:
    return [d if d is not None else "?" for d in graph.input_shape]


def load_onnx_source(cfg: Mapping[str, Any], path: str, chw: tuple[int, int, int]) -> tuple[nn.Module, OnnxGraph,
                                                                                             list[str]]:
    """The module attacks run (``(N, C, H, W)`` in), the graph it wraps, and notes for the results.

    ``chw`` is the image size the model takes (``model.input_size``, else the data's).
    """
    name, layout = cfg.get("name"), str(cfg.get("input_layout") or "nchw")
    if layout not in INPUT_LAYOUTS:
        raise ModelSourceError(f"model {name!r}: input_layout {layout!r} is not one of {list(INPUT_LAYOUTS)}")
    c, h, w = chw
    sample = {"nchw": (c, h, w), "nhwc": (h, w, c), "flat": (c * h * w,)}[layout]
    graph = load_onnx(path, sample_shape=sample)
    dims = list(graph.input_shape)
    if layout == "flat":
        if len(dims) != 2 or graph.sample_shape != sample:
            raise ModelSourceError(
                f"model {name!r}: the ONNX input {graph.input_name!r} takes {_shown(graph)} but input_layout=flat "
                f"feeds each {c}x{h}x{w} image as a {c * h * w}-vector; attacks perturb images, so this network "
                "cannot be attacked on this data set (the verifier reads it: rbl task=vnncomp / verify)")
    elif len(dims) != 4:
        hint = "; set model.input_layout=flat if it takes flattened images" if len(dims) == 2 else ""
        raise ModelSourceError(f"model {name!r}: the ONNX input {graph.input_name!r} has shape {_shown(graph)}, not "
                               f"images (N, C, H, W){hint}")
    notes = list(graph.attack_notes)
    graph, stripped = graph.without_final("Softmax")
    if stripped:
        notes.insert(0, SOFTMAX_NOTE)
    module = {"nchw": lambda g: g, "nhwc": _ChannelsLast, "flat": _Flattened}[layout](graph)
    return module.eval(), graph, notes


def check_graph_input(graph: OnnxGraph, cfg: Mapping[str, Any], data_chw: tuple[int, int, int]) -> None:
    """Channels and image size of an image graph's declared input vs the data's (``model.input_size`` resizes)."""
    layout = str(cfg.get("input_layout") or "nchw")
    if layout == "flat":
        return
    name, size = cfg.get("name"), cfg.get("input_size")
    dims = list(graph.input_shape)
    shown = _shown(graph)
    channels, hw = (dims[1], dims[2:]) if layout == "nchw" else (dims[3], dims[1:3])
    c, h, w = data_chw
    data = f"the data have shape [{c}, {h}, {w}]"
    if channels is not None and channels != c:
        plural = f"{channels} channel{'' if channels == 1 else 's'}"
        raise ModelSourceError(f"model {name!r}: the ONNX input {graph.input_name!r} takes {plural} "
                               f"(shape {shown}) but {data}")
    model_hw = (int(size[1]), int(size[2])) if size is not None else (h, w)
    if any(d is not None and d != m for d, m in zip(hw, model_hw)):
        where = f"input_size {list(size)}" if size is not None else data + " (set model.input_size to resize)"
        shown_hw = ["?" if d is None else d for d in hw]
        raise ModelSourceError(f"model {name!r}: the ONNX input {graph.input_name!r} takes {shown_hw[0]}x{shown_hw[1]} "
                               f"images (shape {shown}) but {where}")
