"""The op table: ONNX op type -> torch function, which inputs must be static, and what attacks should know.

Every consumer (attacks through :class:`rbl_core.onnx.reader.OnnxGraph`, the verifier's importers and
interval bounds) looks ops up here, so an op is supported everywhere or refused everywhere by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

import rbl_core.onnx.ops_nn as nn_ops
import rbl_core.onnx.ops_shape as shape_ops
from rbl_core.onnx.ops_shape import elementwise


@dataclass(frozen=True)
class OpSpec:
    """How one op runs: ``fn(step, *inputs)``; ``static``: input positions that must be known at load."""

    fn: Callable[..., Any]
    static: tuple[int, ...] = ()
    attack_note: str = ""        # recorded with an attack's results when the graph has this op
    load_only: bool = False      # shape arithmetic: always folded when the file is loaded, never a step


_SAME = elementwise(lambda x: x)

OPS: dict[str, OpSpec] = {
    # layers
    "Conv": OpSpec(nn_ops.conv), "ConvTranspose": OpSpec(nn_ops.conv_transpose),
    "Gemm": OpSpec(nn_ops.gemm), "MatMul": OpSpec(nn_ops.matmul),
    "BatchNormalization": OpSpec(nn_ops.batch_norm), "LayerNormalization": OpSpec(nn_ops.layer_norm),
    "MaxPool": OpSpec(nn_ops.max_pool), "AveragePool": OpSpec(nn_ops.avg_pool),
    "GlobalAveragePool": OpSpec(nn_ops.global_avg_pool), "GlobalMaxPool": OpSpec(nn_ops.global_max_pool),
    "ReduceMean": OpSpec(nn_ops.reduce, (1,)), "ReduceSum": OpSpec(nn_ops.reduce, (1,)),
    # elementwise arithmetic
    "Add": OpSpec(elementwise(torch.add)), "Sub": OpSpec(elementwise(torch.sub)),
    "Mul": OpSpec(elementwise(torch.mul)), "Div": OpSpec(shape_ops.div), "Neg": OpSpec(elementwise(torch.neg)),
    "Pow": OpSpec(nn_ops.power, (1,)), "Sqrt": OpSpec(elementwise(torch.sqrt)),
    # activations
    "Relu": OpSpec(elementwise(F.relu)), "LeakyRelu": OpSpec(nn_ops.leaky_relu),
    "Sigmoid": OpSpec(elementwise(torch.sigmoid)), "Tanh": OpSpec(elementwise(torch.tanh)),
    "Erf": OpSpec(elementwise(torch.erf)), "Gelu": OpSpec(nn_ops.gelu), "Softmax": OpSpec(nn_ops.softmax),
    "Sign": OpSpec(nn_ops.sign, attack_note="Sign: straight-through (identity) gradient in attacks"),
    "Clip": OpSpec(nn_ops.clip, (1, 2)),
    # layout
    "Flatten": OpSpec(shape_ops.flatten), "Reshape": OpSpec(shape_ops.reshape, (1,)),
    "Transpose": OpSpec(shape_ops.transpose), "Concat": OpSpec(shape_ops.concat),
    "Split": OpSpec(shape_ops.split, (1,)), "Squeeze": OpSpec(shape_ops.squeeze, (1,)),
    "Unsqueeze": OpSpec(shape_ops.unsqueeze, (1,)), "Slice": OpSpec(shape_ops.slice_, (1, 2, 3, 4)),
    "Gather": OpSpec(shape_ops.gather, (1,)), "Expand": OpSpec(shape_ops.expand, (1,)),
    "Pad": OpSpec(shape_ops.pad, (1, 2, 3)), "Resize": OpSpec(shape_ops.resize, (1, 2, 3)),
    "Upsample": OpSpec(shape_ops.upsample, (1,)), "Identity": OpSpec(_SAME), "Dropout": OpSpec(shape_ops.dropout),
    "Cast": OpSpec(shape_ops.cast),
    # shape arithmetic, folded at load
    "Shape": OpSpec(shape_ops.shape, load_only=True),
    "ConstantOfShape": OpSpec(shape_ops.constant_of_shape, (0,), load_only=True),
    "Range": OpSpec(shape_ops.range_, (0, 1, 2), load_only=True),
    # the index arithmetic of exported reshapes (nn.Unflatten: Mod; masks: Equal/Where), also folded at load
    "Mod": OpSpec(shape_ops.mod, (0, 1), load_only=True),
    "Equal": OpSpec(elementwise(torch.eq), (0, 1), load_only=True),
    "Where": OpSpec(elementwise(torch.where), (0, 1, 2), load_only=True),
}
# Constant is read when the file is loaded and never becomes a step.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*OPS, "Constant"]))
# Advice for ops that are refused, appended to the error.
HINTS = {"Softplus": "; export with F.softplus replaced by a supported op, or as a custom torch model (model=torch)",
         "Loop": "; control flow cannot be attacked or verified: export a graph without it",
         "If": "; control flow cannot be attacked or verified: export a graph without it"}
