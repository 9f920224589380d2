"""A user's ONNX file and torch checkpoint, evaluated on an image folder, give the zoo model's own numbers,
and are ranked beside it on one leaderboard (the README's examples, run on files this test makes)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from robustbench_local.api import benchmark
from robustbench_local.data import load_dataset
from robustbench_local.results import ResultsStore

REPO = Path(__file__).resolve().parent.parent
N = 40


def _rbl(tmp: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "robustbench_local.cli", f"results.url=sqlite:///{tmp}/r.db",
           f"results.state_dir={tmp}/state", f"results.spool={tmp}/spool.jsonl", f"hydra.run.dir={tmp}/out",
           "progress=false", "workers=1", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}  # so model.target=user_nets:... imports
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"rbl failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, mnist_cnn):
    """An image folder of real MNIST digits, and the zoo CNN exported to ONNX and to safetensors."""
    tmp = tmp_path_factory.mktemp("user")
    data = load_dataset("mnist", "test", n=N)
    for i, (img, label) in enumerate(zip(data.x, data.y)):
        folder = tmp / "digits" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    torch.onnx.export(mnist_cnn, (data.x[:1],), str(tmp / "cnn.onnx"), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    save_file(mnist_cnn.state_dict(), str(tmp / "cnn.safetensors"))
    return tmp


TORCH = ["model=torch", "model.name=my_torch_cnn", "model.target=rbl_core.architectures:build",
         "model.kwargs={arch:cnn_small,input_shape:[1,28,28],num_classes:10}"]


def test_onnx_and_torch_checkpoints_match_the_zoo_model_and_share_its_leaderboard(user_files, mnist_cnn):
    tmp, folder = user_files, user_files / "digits"
    zoo_clean, zoo_robust = benchmark(mnist_cnn, dataset="folder", data_path=folder, eps=0.1, attacks="pgd",
                                      model_name="zoo_standard_cnn", results_url=f"sqlite:///{tmp}/r.db",
                                      overrides=["workers=1", f"results.state_dir={tmp}/state",
                                                 f"results.spool={tmp}/spool.jsonl"])
    data = ["dataset=folder", f"dataset.path={folder}", "attack=pgd", "threat.eps=0.1"]
    _rbl(tmp, "model=onnx", "model.name=my_onnx_cnn", f"model.path={tmp}/cnn.onnx", *data)
    _rbl(tmp, *TORCH, f"model.weights={tmp}/cnn.safetensors", *data)
    rows = {r["model"]: r["metrics"] for r in ResultsStore(f"sqlite:///{tmp}/r.db").rows(kind="evasion")}
    assert set(rows) == {"zoo_standard_cnn", "my_onnx_cnn", "my_torch_cnn"}
    assert rows["zoo_standard_cnn"]["clean_acc"] == zoo_clean >= 0.9 and rows["zoo_standard_cnn"]["robust_acc"] == zoo_robust
    for name in ("my_onnx_cnn", "my_torch_cnn"):
        m = rows[name]
        assert m["clean_mask"] == rows["zoo_standard_cnn"]["clean_mask"], name
        assert list(m["masks"].values()) == list(rows["zoo_standard_cnn"]["masks"].values()), name
        assert (m["clean_acc"], m["robust_acc"]) == (zoo_clean, zoo_robust), name
    assert rows["my_onnx_cnn"]["model_info"]["source"] == "onnx"
    assert rows["my_torch_cnn"]["model_info"]["training"] == "external"
    board = _rbl(tmp, "task=leaderboard").stdout
    for name, source in (("zoo_standard_cnn", "python"), ("my_onnx_cnn", "onnx"), ("my_torch_cnn", "torch")):
        assert f"| {name} | {source} |" in board, board


class _Softplus(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.nn.functional.softplus(x)


def _export(model: torch.nn.Module, path: Path) -> None:
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 28, 28),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)


def _make(kind: str | None, files: Path, mnist_cnn: torch.nn.Module) -> None:
    """Write the bad input a case needs."""
    if kind == "corrupt":
        (files / "corrupt.onnx").write_bytes(os.urandom(256))
    elif kind == "pickle":
        torch.save(mnist_cnn, files / "module.pt")
    elif kind == "softplus":
        _export(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), _Softplus()), files / "softplus.onnx")
    elif kind == "probabilities":
        save_file(torch.nn.Sequential(mnist_cnn, torch.nn.Softmax(dim=1)).state_dict(), str(files / "probs.safetensors"))
    elif kind in ("empty_class", "bad_image"):
        import shutil

        bad = files / kind
        shutil.copytree(files / "digits", bad, dirs_exist_ok=True)
        if kind == "empty_class":
            (bad / "z_empty").mkdir(exist_ok=True)
        else:
            (bad / "3" / "broken.png").write_bytes(b"not a png at all")


ONNX = ["model=onnx", "model.path={tmp}/cnn.onnx"]


@pytest.mark.parametrize("make,overrides,message", [
    (None, ["model=onnx", "model.path=/nonexistent/net.onnx"], "does not exist"),
    ("corrupt", ["model=onnx", "model.path={tmp}/corrupt.onnx"], "corrupt.onnx"),
    ("softplus", ["model=onnx", "model.path={tmp}/softplus.onnx"], "'Softplus'"),
    ("pickle", [*TORCH, "model.weights={tmp}/module.pt"], "weights_only"),
    ("probabilities", ["model=torch", "model.target=user_nets:probability_cnn", "model.weights={tmp}/probs.safetensors",
                       "model.kwargs={arch:cnn_small,input_shape:[1,28,28],num_classes:10}"], "returns probabilities"),
    (None, [*TORCH, "model.weights={tmp}/cnn.safetensors", "model.kwargs.num_classes=7"], "7"),
    (None, [*ONNX, "dataset=cifar10"], "channel"),
    ("empty_class", [*ONNX, "dataset=folder", "dataset.path={tmp}/empty_class"], "z_empty"),
    ("bad_image", [*ONNX, "dataset=folder", "dataset.path={tmp}/bad_image"], "broken.png"),
])
def test_bad_user_models_fail_with_one_line_and_record_nothing(user_files, mnist_cnn, tmp_path, make, overrides,
                                                               message):
    _make(make, user_files, mnist_cnn)
    args = [o.replace("{tmp}", str(user_files)) for o in overrides]
    if not any(a.startswith("dataset=") for a in args):
        args += ["dataset=folder", f"dataset.path={user_files / 'digits'}"]
    proc = _rbl(tmp_path, "attack=fgsm", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("rbl: error")]
    assert len(err_lines) == 1, proc.stderr
    assert ResultsStore(f"sqlite:///{tmp_path}/r.db").rows() == []


def test_a_users_onnx_network_is_certified_like_the_zoo_model(tmp_path):
    from robustbench_local.zoo import load_model

    zoo = load_model("standard_mlp_tiny", "digits")
    data = load_dataset("digits", "test", n=20)
    np.savez(tmp_path / "digits.npz", x=data.x.numpy(), y=data.y.numpy())
    torch.onnx.export(zoo, (data.x[:1],), str(tmp_path / "mlp.onnx"), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    common = ["task=certify", "threat.eps=0.05", "task.timeout=30"]
    _rbl(tmp_path, *common, "model=standard_mlp_tiny", "dataset.n_test=20")
    _rbl(tmp_path, *common, "model=onnx", "model.name=my_mlp", f"model.path={tmp_path}/mlp.onnx",
         "dataset=npz", f"dataset.path={tmp_path}/digits.npz")
    save_file(zoo.state_dict(), str(tmp_path / "mlp.safetensors"))
    _rbl(tmp_path, *common, "model=torch", "model.name=my_torch_mlp", "model.target=rbl_core.architectures:build",
         "model.kwargs={arch:mlp_tiny,input_shape:[1,8,8],num_classes:10}", f"model.weights={tmp_path}/mlp.safetensors",
         "dataset=npz", f"dataset.path={tmp_path}/digits.npz")
    rows = {r["model"]: r["metrics"] for r in ResultsStore(f"sqlite:///{tmp_path}/r.db").rows(kind="certification")}
    for name in ("my_mlp", "my_torch_mlp"):
        assert rows[name]["statuses"] == rows["standard_mlp_tiny"]["statuses"], name
        assert rows[name]["certified_acc"] == rows["standard_mlp_tiny"]["certified_acc"] >= 0.5
