"""Every op of the reader's table against onnxruntime on small generated graphs, and its interval rule's soundness."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rbl_core.onnx import OPS, SUPPORTED_OPS, UnsupportedOnnxOp, load_onnx
from verify.graph_ibp import HOW, interval_bounds

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def node(op: str, inputs: list[str], **attrs) -> onnx.NodeProto:
    """One node writing ``y`` (``y2`` too for two-output ops named in ``attrs['outputs']``)."""
    outputs = attrs.pop("outputs", ["y"])
    return helper.make_node(op, inputs, outputs, name=f"the_{op.lower()}_{outputs[0]}", **attrs)


# (id, nodes, initializers, input shape (batch first, symbolic "N"), opset, input range)
CASES = [
    ("conv_groups_same", [node("Conv", ["x", "w", "b"], group=2, auto_pad="SAME_UPPER", strides=[2, 1])],
     {"w": _w(4, 2, 3, 3), "b": _w(4)}, [4, 9, 8], 17),
    ("conv_dilation_pads", [node("Conv", ["x", "w"], dilations=[2, 2], pads=[1, 2, 2, 1])], {"w": _w(3, 4, 3, 3)},
     [4, 9, 8], 17),
    ("conv_valid", [node("Conv", ["x", "w"], auto_pad="VALID")], {"w": _w(3, 4, 2, 2)}, [4, 6, 6], 17),
    ("conv_transpose", [node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 1, 1, 1],
                             output_padding=[1, 1])], {"w": _w(4, 3, 3, 3), "b": _w(3)}, [4, 5, 5], 17),
    ("gemm", [node("Gemm", ["x", "w", "b"], transB=1, alpha=0.5, beta=2.0)], {"w": _w(3, 6), "b": _w(3)}, [6], 17),
    ("matmul_batched", [node("MatMul", ["x", "w"])], {"w": _w(2, 5, 3)}, [2, 4, 5], 17),
    ("matmul_two_variables", [node("Transpose", ["x"], perm=[0, 2, 1], outputs=["t"]),
                              node("MatMul", ["x", "t"])], {}, [3, 4], 17),
    ("add_sub_mul_div_neg", [node("Add", ["x", "c"], outputs=["a"]), node("Sub", ["a", "x"], outputs=["s"]),
                             node("Mul", ["s", "x"], outputs=["m"]), node("Div", ["m", "c"], outputs=["d"]),
                             node("Neg", ["d"])], {"c": np.abs(_w(5)) + 0.5}, [5], 17),
    ("div_by_variable", [node("Div", ["c", "x"])], {"c": _w(4)}, [4], 17, (0.5, 1.5)),
    ("pow_sqrt", [node("Pow", ["x", "two"], outputs=["p"]), node("Sqrt", ["p"])], {"two": np.float32(2.0)}, [6], 17),
    ("relu_leaky_sigmoid_tanh", [node("Relu", ["x"], outputs=["r"]), node("LeakyRelu", ["x"], alpha=0.2, outputs=["l"]),
                                 node("Sigmoid", ["x"], outputs=["s"]), node("Tanh", ["x"], outputs=["t"]),
                                 node("Concat", ["r", "l", "s", "t"], axis=1)], {}, [5], 17),
    ("erf_sign_clip", [node("Erf", ["x"], outputs=["e"]), node("Sign", ["x"], outputs=["s"]),
                       node("Clip", ["x", "lo", "hi"], outputs=["c"]), node("Concat", ["e", "s", "c"], axis=1)],
     {"lo": np.float32(-0.3), "hi": np.float32(0.4)}, [5], 17),
    ("gelu", [node("Gelu", ["x"])], {}, [7], 20, (-3.0, 2.0)),
    ("softmax", [node("Softmax", ["x"], axis=-1)], {}, [3, 5], 17),
    ("softmax_opset9_coerced", [node("Softmax", ["x"], axis=1)], {}, [3, 4], 9),
    ("batchnorm", [node("BatchNormalization", ["x", "s", "b", "m", "v"])],
     {"s": _w(3), "b": _w(3), "m": _w(3), "v": np.abs(_w(3)) + 0.5}, [3, 4, 4], 15),
    ("layernorm", [node("LayerNormalization", ["x", "s", "b"], axis=-1)], {"s": _w(6), "b": _w(6)}, [4, 6], 17),
    ("pools", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], outputs=["m"]),
               node("AveragePool", ["m"], kernel_shape=[2, 2], outputs=["a"]),
               node("GlobalAveragePool", ["a"])], {}, [2, 9, 9], 17),
    ("global_max_pool", [node("GlobalMaxPool", ["x"])], {}, [2, 4, 4], 17),
    ("reduce_mean_sum", [node("ReduceMean", ["x"], axes=[2], keepdims=0, outputs=["m"]),
                         node("ReduceSum", ["m", "ax"], keepdims=1)], {"ax": _i(1)}, [3, 4, 5], 17),
    ("pad_constant_reflect", [node("Pad", ["x", "p", "v"], outputs=["c"]), node("Pad", ["c", "p"], mode="reflect")],
     {"p": _i(0, 0, 1, 2, 0, 0, 2, 1), "v": np.float32(0.7)}, [2, 5, 5], 17),
    ("resize_linear_half_pixel", [node("Resize", ["x", "", "sc"], mode="linear")],
     {"sc": np.array([1, 1, 2, 1.5], np.float32)}, [2, 4, 4], 17),
    ("resize_nearest_sizes", [node("Resize", ["x", "", "", "sz"], mode="nearest",
                                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
     {"sz": _i(2, 2, 7, 9)}, [2, 3, 4], 17),
    ("upsample", [node("Upsample", ["x", "sc"], mode="nearest")], {"sc": np.array([1, 1, 2, 2], np.float32)},
     [2, 3, 3], 9),
    ("layout", [node("Flatten", ["x"], outputs=["f"]), node("Reshape", ["f", "shp"], outputs=["r"]),
                node("Transpose", ["r"], perm=[0, 2, 1], outputs=["t"]),
                node("Split", ["t", "sp"], axis=2, outputs=["s1", "s2"]), node("Concat", ["s2", "s1"], axis=2,
                                                                                 outputs=["c"]),
                node("Dropout", ["c"], outputs=["d"]), node("Identity", ["d"])], {"shp": _i(0, 6, 4), "sp": _i(1, 5)},
     [2, 3, 4], 17),
    ("mod_equal_where", [node("Shape", ["x"], outputs=["sh"]), node("Slice", ["sh", "one", "three"], outputs=["hw"]),
                         node("Mod", ["hw", "five"], outputs=["m"]), node("Equal", ["m", "two_zero"], outputs=["e"]),
                         node("Where", ["e", "six_zero", "one_one"], outputs=["w"]),
                         node("Slice", ["w", "zero1", "one"], outputs=["w0"]),
                         node("Concat", ["minus1", "w0"], axis=0, outputs=["tgt"]), node("Reshape", ["x", "tgt"])],
     {"one": _i(1), "three": _i(3), "five": _i(5, 5), "two_zero": _i(2, 0), "six_zero": _i(6, 0), "one_one": _i(1, 1),
      "zero1": _i(0), "minus1": _i(-1)}, [2, 3], 17),
    ("shape_arithmetic", [node("Shape", ["x"], outputs=["sh"]), node("Gather", ["sh", "zero"], axis=0, outputs=["n"]),
                          node("Unsqueeze", ["n", "zero1"], outputs=["n1"]), node("Cast", ["n1"], to=7, outputs=["nc"]),
                          node("Concat", ["nc", "minus1"], axis=0, outputs=["tgt"]),
                          node("Reshape", ["x", "tgt"], outputs=["flat"]),
                          node("ConstantOfShape", ["three"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]),
                               outputs=["half"]),
                          node("Range", ["r0", "r3", "r1"], outputs=["rg"]), node("Cast", ["rg"], to=1, outputs=["rgf"]),
                          node("Add", ["half", "rgf"], outputs=["row"]),
                          node("Slice", ["flat", "s0", "s1", "ax1"], outputs=["sl"]),
                          node("Expand", ["row", "exp"], outputs=["ex"]),
                          node("Squeeze", ["ex", "zero1"], outputs=["sq"]),
                          node("Mul", ["sl", "sq"])],
     {"zero": np.array(0, np.int64), "zero1": _i(0), "minus1": _i(-1), "three": _i(3), "r0": np.array(0, np.int64),
      "r3": np.array(3, np.int64), "r1": np.array(1, np.int64), "s0": _i(2), "s1": _i(5), "ax1": _i(1),
      "exp": _i(1, 3)}, [2, 2, 2], 17),
]


def _save(tmp_path, case) -> tuple[str, tuple[float, float]]:
    name, nodes, inits, shape, opset = case[:5]
    box = case[5] if len(case) > 5 else (-1.0, 1.0)
    out_shape = case[6] if len(case) > 6 else None   # None: inferred below
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    path = tmp_path / f"{name}.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))   # the checker wants the output's shape
    return str(path), box


def _ort(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.astype(np.float32)})[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime_and_its_box_holds_the_outputs(case, tmp_path):
    path, (a, b) = _save(tmp_path, case)
    graph = load_onnx(path)
    gen = torch.Generator().manual_seed(1)
    x = a + (b - a) * torch.rand(5, *case[3], generator=gen)
    with torch.no_grad():
        got = graph(x).numpy()
    np.testing.assert_allclose(got, _ort(path, x.numpy()), atol=1e-5, rtol=1e-5)
    # interval bounds over a box around one input hold onnxruntime's outputs at points sampled in it
    centre = x[:1]
    lo, hi = (centre - 0.1).clamp(a, b), (centre + 0.1).clamp(a, b)
    ylo, yhi = interval_bounds(graph, lo, hi)
    pts = lo + (hi - lo) * torch.rand(64, *case[3], generator=gen)
    y = _ort(path, pts.numpy())
    assert (y >= ylo.numpy()).all() and (y <= yhi.numpy()).all(), case[0]


def test_every_op_of_the_table_is_covered_and_bounded():
    used = {n.op_type for c in CASES for n in c[1]}
    assert set(SUPPORTED_OPS) <= used | {"Constant"}
    # every op that can be a step says how the verifier bounds it
    assert {op for op, spec in OPS.items() if not spec.load_only} <= set(HOW)


def test_sign_has_a_straight_through_gradient_and_says_so(tmp_path):
    path, _ = _save(tmp_path, ("sign", [node("Sign", ["x"])], {}, [4], 17))
    graph = load_onnx(path)
    x = torch.randn(3, 4, requires_grad=True)
    graph(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)) and any("straight-through" in n for n in graph.attack_notes)


def test_runtime_shape_inputs_are_refused_naming_the_node(tmp_path):
    # a Reshape whose target is computed from the data's values (not its shape) cannot be folded
    nodes = [node("Cast", ["x"], to=7, outputs=["xi"]), node("Reshape", ["x", "xi"])]
    path, _ = _save(tmp_path, ("dyn", nodes, {}, [2], 17, (-1.0, 1.0), ["a", "b"]))
    with pytest.raises(UnsupportedOnnxOp, match=r"node 'the_reshape_y' \(Reshape\): its input 'xi' is computed from the data"):
        load_onnx(path)
