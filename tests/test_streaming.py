"""Streamed data: an .npz or folder read batch by batch gives exactly the in-memory evaluation's numbers."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from attacks.adapters.foolbox_adapter import FoolboxAttack
from rbl_core.data import DataSplit, StreamedSplit, stream_batches
from rbl_core.threat import ThreatModel
from robustbench_local.data import load_dataset
from robustbench_local.evaluation import evaluate
from robustbench_local.npz_rows import NpzRows


@pytest.fixture(scope="module")
def digits() -> DataSplit:
    """The first 60 bundled digits test images (8x8 grey, real data)."""
    return load_dataset("digits", "test", n=60)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def _attacks() -> dict:
    return {"fgsm": FoolboxAttack("FGSM"), "pgd": FoolboxAttack("PGD", steps=10)}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_streamed_npz_evaluation_equals_in_memory(tmp_path, digits, save):
    file = tmp_path / "digits.npz"
    save(file, x=digits.x.numpy(), y=digits.y.numpy())
    streamed = load_dataset("npz", path=file)
    assert isinstance(streamed, StreamedSplit) and len(streamed) == len(digits)
    threat = ThreatModel("Linf", 0.1)
    memory = evaluate(_model(), digits, _attacks(), threat, batch_size=16, progress=False)
    stream = evaluate(_model(), streamed, _attacks(), threat, batch_size=16, progress=False)
    assert stream.metrics()["masks"] == memory.metrics()["masks"]
    assert stream.clean == memory.clean
    assert 0 < memory.clean_acc and sum(memory.worst_case) < sum(memory.clean)   # the attacks had work to do
    for name in memory.attacks:
        assert stream.attacks[name].distance == memory.attacks[name].distance


def test_streamed_folder_reads_the_images_it_lists(tmp_path, digits):
    for i in range(20):
        (tmp_path / str(int(digits.y[i]))).mkdir(exist_ok=True)
        pixels = (digits.x[i, 0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / str(int(digits.y[i])) / f"{i:03d}.png")
    streamed = load_dataset("folder", path=tmp_path)
    assert isinstance(streamed, StreamedSplit) and streamed.input_shape == (1, 8, 8)
    whole = streamed.x
    batches = torch.cat([x for _, x in stream_batches(streamed, 7)])
    assert torch.equal(whole, batches)
    sub = streamed.subset(indices=np.array([3, 5, 11]))
    assert torch.equal(sub.x, whole[[3, 5, 11]]) and torch.equal(sub.y, streamed.y[[3, 5, 11]])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_rows_match_numpy(tmp_path, save):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 5, 4, 3), dtype=np.uint8)
    save(tmp_path / "a.npz", x=x, f=np.asfortranarray(x[:, :, :, 0]))
    rows = NpzRows(tmp_path / "a.npz", "x")
    for idx in (np.arange(50), np.array([49, 0, 7, 8, 9, 30]), np.array([], dtype=np.int64)):
        assert np.array_equal(rows.rows(idx), x[idx])
    fortran = NpzRows(tmp_path / "a.npz", "f")
    assert fortran.fortran_order and np.array_equal(fortran.rows(np.array([4, 2])), x[[4, 2], :, :, 0])
    rows.close()
    fortran.close()


def test_stream_batches_reads_ahead_boundedly_and_passes_errors_on():
    alive = {"ahead": 0, "most": 0}
    lock = threading.Lock()

    def read(positions: np.ndarray) -> torch.Tensor:
        with lock:
            alive["ahead"] += 1
            alive["most"] = max(alive["most"], alive["ahead"])
        if positions[0] >= 40:
            raise OSError("disk gone at row 40")
        return torch.zeros(len(positions), 1, 2, 2)

    data = StreamedSplit(torch.zeros(60, dtype=torch.long), 2, "t", "test", ("a", "b"), (1, 2, 2), read, np.arange(60))
    seen = []
    with pytest.raises(OSError, match="row 40"):
        for span, x in stream_batches(data, 10, prefetch=1):
            with lock:
                alive["ahead"] -= 1
            seen.append(span.start)
    assert seen == [0, 10, 20, 30]
    # Consumed one, one in the queue, one being read: never the whole set.
    assert alive["most"] <= 3
