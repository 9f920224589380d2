"""ACAS Xu from ../shared/benchmarks: ONNX import, VNN-LIB parsing, answers as in expected.csv."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rbl_core.onnx import ModelSourceError, UnsupportedOnnxOp
from verify.torch_import import from_onnx as load_onnx
from verify.verifier import verify
from verify.vnncomp_runner import format_result, onnxruntime_output, run_csv, solve_instance
from verify.vnnlib import VnnlibError, load_vnnlib, parse_vnnlib

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "acasxu"
# A fast subset of instances.csv: holds and violated answers, properties 1-4, 8 and 10; 1_5 prop_2
# is violated but random sampling misses it: the counterexample comes out of the input splitting
FAST = [("1_1", 1), ("1_1", 4), ("1_5", 2), ("1_5", 3), ("4_5", 10), ("1_9", 3), ("1_9", 4), ("2_3", 2), ("2_7", 3), ("3_7", 4), ("4_9", 4), ("2_9", 8)]


@pytest.fixture(scope="module")
def expected() -> dict:
    if not BENCH.exists():
        raise FileNotFoundError(f"ACAS Xu benchmark not found at {BENCH}")
    rows = csv.DictReader(open(BENCH / "expected.csv"))
    return {(r["network"], r["property"]): r["expected"] for r in rows}


def _onnx(net_id: str) -> Path:
    return BENCH / "onnx" / f"ACASXU_run2a_{net_id}_batch_2000.onnx"


def test_onnx_import_matches_onnxruntime():
    rng = np.random.default_rng(0)
    for net_id in ("1_1", "3_7", "5_9"):
        net = load_onnx(_onnx(net_id))
        assert net.hidden_sizes == [50] * 6 and net.input_dim == 5 and net.output_dim == 5
        for x in rng.uniform(-0.5, 0.5, (10, 5)):
            ref = onnxruntime_output(_onnx(net_id), x)
            assert np.abs(net.forward(x) - ref).max() < 1e-4


def test_unsupported_onnx_op_is_named(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Softplus", ["h"], ["y"], name="act")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    path = tmp_path / "softplus.onnx"
    import onnx

    onnx.save(helper.make_model(g), str(path))
    with pytest.raises(UnsupportedOnnxOp, match="node 'act' uses op 'Softplus'"):
        load_onnx(path)
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")


def test_vnnlib_parses_the_ten_properties():
    p1 = load_vnnlib(BENCH / "vnnlib" / "prop_1.vnnlib")
    assert len(p1.terms) == 1 and len(p1.terms[0].groups) == 1
    np.testing.assert_allclose(p1.terms[0].lo, [0.6, -0.5, -0.5, 0.45, -0.5])
    C, d = p1.terms[0].groups[0]
    np.testing.assert_allclose(C, [[-1, 0, 0, 0, 0]])  # Y_0 >= 3.99  <=>  -Y_0 <= -3.99
    assert d[0] == pytest.approx(-3.991125645861615)
    p2 = load_vnnlib(BENCH / "vnnlib" / "prop_2.vnnlib")
    assert p2.terms[0].groups[0][0].shape == (4, 5)  # a conjunction of four rows
    p6 = load_vnnlib(BENCH / "vnnlib" / "prop_6.vnnlib")
    assert len(p6.terms) == 2 and all(len(t.groups) == 4 for t in p6.terms)  # two boxes x four disjuncts
    p7 = load_vnnlib(BENCH / "vnnlib" / "prop_7.vnnlib")
    assert [g[0].shape for g in p7.terms[0].groups] == [(3, 5), (3, 5)]


@pytest.mark.parametrize("text,line,msg", [
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n", 3, "never closed"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= Y_0 (foo 2)))", 4, "foo"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Int)\n", 2, "sort"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= (* X_0 Y_0) 1))", 3, "not linear"),
])
def test_malformed_vnnlib_names_the_line(text, line, msg):
    with pytest.raises(VnnlibError, match=rf":{line}: .*{msg}"):
        parse_vnnlib(text, "bad.vnnlib")


@pytest.mark.parametrize("net_id,prop", FAST)
def test_fast_subset_answers_as_expected(net_id, prop, expected):
    net = load_onnx(_onnx(net_id))
    spec = load_vnnlib(BENCH / "vnnlib" / f"prop_{prop}.vnnlib")
    v = verify(net, spec, timeout=60)
    assert v.status == expected[(f"ACASXU_run2a_{net_id}_batch_2000", f"prop_{prop}")], v.reason
    if v.status == "violated":
        # re-checked by our forward pass and by onnxruntime (float32)
        assert spec.is_counterexample(v.counterexample, net.forward(v.counterexample))
        assert spec.is_counterexample(v.counterexample, onnxruntime_output(_onnx(net_id), v.counterexample), tol=1e-5)


def test_input_splitting_needed_and_sound_on_property_4(expected):
    # 1_1 prop_4 is not settled by bounds on the whole box: the answer needs splitting
    net = load_onnx(_onnx("1_1"))
    spec = load_vnnlib(BENCH / "vnnlib" / "prop_4.vnnlib")
    assert verify(net, spec, method="bounds", falsify=False).status == "unknown"
    v = verify(net, spec, timeout=60)
    assert v.status == "holds" and v.engine == "input_split" and v.stats["boxes"] > 1


def test_vnncomp_runner_writes_result_files(tmp_path):
    csv_path = tmp_path / "instances.csv"
    csv_path.write_text(f"{_onnx('1_9')},{BENCH / 'vnnlib' / 'prop_3.vnnlib'},30\n"
                        f"{_onnx('1_5')},{BENCH / 'vnnlib' / 'prop_3.vnnlib'},30\n")
    res = run_csv(csv_path, tmp_path / "out", root="/", workers=2)
    assert [r["result"] for r in res] == ["sat", "unsat"]
    text = (tmp_path / "out" / "ACASXU_run2a_1_9_batch_2000__prop_3.txt").read_text()
    assert text.startswith("sat\n((X_0 ") and "(Y_4 " in text
    assert (tmp_path / "out" / "ACASXU_run2a_1_5_batch_2000__prop_3.txt").read_text() == "unsat\n"
    assert res[0]["onnxruntime_ok"] is True
    timeout_res = solve_instance(str(_onnx("3_3")), str(BENCH / "vnnlib" / "prop_2.vnnlib"), 1.0)
    assert timeout_res["result"] == "timeout" and format_result(timeout_res) == "timeout\n"


def test_rbl_vnncomp_task_records_a_verification_row(tmp_path, monkeypatch):
    from robustbench_local.api import compose_config, run_task
    from robustbench_local.results import ResultsStore

    monkeypatch.chdir(tmp_path)  # without Hydra's run dir the task writes its result files to the cwd
    # instances.csv and expected.csv side by side, as in shared/benchmarks/acasxu
    bench = tmp_path / "acasxu"
    bench.mkdir()
    (bench / "instances.csv").write_text(f"{_onnx('1_9')},{BENCH / 'vnnlib' / 'prop_4.vnnlib'},30\n"
                                         f"{_onnx('3_7')},{BENCH / 'vnnlib' / 'prop_4.vnnlib'},30\n")
    (bench / "expected.csv").write_text((BENCH / "expected.csv").read_text())
    run_task(compose_config(f"results.url=sqlite:///{tmp_path}/r.db", "task=vnncomp",
                            f"task.csv={bench / 'instances.csv'}", "task.timeout=30"))
    (row,) = ResultsStore(f"sqlite:///{tmp_path}/r.db").rows(kind="verification")
    m = row["metrics"]
    assert (m["n"], m["sat"], m["unsat"], m["wrong"], m["bad_counterexamples"]) == (2, 1, 1, [], 0)
    assert (tmp_path / "vnncomp" / "ACASXU_run2a_1_9_batch_2000__prop_4.txt").read_text().startswith("sat\n")
