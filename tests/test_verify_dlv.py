"""DLV on the zoo's tiny digits MLP: Z3 search == brute-force enumeration of the same discretised region."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from verify.dlv import DLVConfig, brute_force, dlv, input_values, is_misclassified, select_features
from verify.torch_import import from_torch


@pytest.fixture(scope="module")
def tiny_mlp():
    from robustbench_local.data import load_dataset
    from robustbench_local.zoo import load_model

    model = load_model("standard_mlp_tiny", "digits")
    data = load_dataset("digits", "test", n=8)  # images 0-5 give both verdicts
    return model, from_torch(model, (1, 8, 8)), data


def test_dlv_finds_exactly_the_brute_force_adversarial_examples(tiny_mlp):
    model, net, data = tiny_mlp
    verdicts = []
    for i in range(6):
        x = data.x[i].double().numpy().reshape(-1)
        cfg = DLVConfig(num_features=4, heuristic="derivative", hidden_layers=1, hidden_features=3,
                        max_map_back=8, timeout=60)
        res = dlv(net, x, None, cfg)
        region = res.layers[0]
        truth = set(brute_force(net, x, res.label, region.dims, region.values))
        found = {tuple(a[region.dims]) for a in region.adversarial}
        assert found == truth, f"image {i}"
        assert res.status == ("violated" if truth else "holds")
        for adv in res.adversarial:
            # every reported example lies in the region, and the torch model misclassifies it
            untouched = np.setdiff1d(np.arange(64), region.dims)
            assert np.array_equal(adv[untouched], x[untouched])
            assert all(adv[p] in vals for p, vals in zip(region.dims, region.values))
            with torch.no_grad():
                logits = model(torch.from_numpy(adv).float().reshape(1, 1, 8, 8))[0]
            assert (np.delete(logits.numpy(), res.label) >= logits[res.label].item()).any()
        # hidden-layer candidates that map back are genuine grid points found by brute force
        for rep in res.layers[1:]:
            assert {tuple(a[region.dims]) for a in rep.adversarial} <= truth
            assert rep.candidates >= len(rep.adversarial)
        verdicts.append(res.status)
    # the family must contain both safe regions (proved) and unsafe ones
    assert "holds" in verdicts and "violated" in verdicts


def test_feature_selection_and_region():
    x = np.array([0.0, 0.9, 0.3, 1.0])
    from verify.network import random_relu_network

    net = random_relu_network([4, 5, 3], seed=0)
    assert select_features(net, x, 0, 0, 2, "activation") == [3, 1]
    assert input_values(x, [2, 3], span=1.0, num_span=1) == [[0.0, 0.3, 1.0], [0.0, 1.0]]
    assert input_values(x, [2], span=0.2, num_span=2) == [[0.0, 0.1, 0.3, 0.5, 0.7]] or \
        np.allclose(input_values(x, [2], span=0.2, num_span=2)[0], [0.0, 0.1, 0.3, 0.5, 0.7])
    assert is_misclassified(np.array([[1.0, 2.0, 0.0]]), 0)[0] and not is_misclassified(np.array([[3.0, 2.0, 0.0]]), 0)[0]
    with pytest.raises(ValueError, match="heuristic"):
        DLVConfig(heuristic="random")


def test_hidden_layer_counterexamples_map_back_to_inputs(tiny_mlp):
    # layer-by-layer: misclassified points of the discretised hidden-layer region are mapped
    # back with Z3 to inputs of the input grid; the ones that map back are real adversarial
    # examples of the input region, the rest are reported as spurious
    _, net, data = tiny_mlp
    mapped = 0
    for i, heuristic in ((1, "derivative"), (7, "activation")):
        x = data.x[i].double().numpy().reshape(-1)
        res = dlv(net, x, None, DLVConfig(num_features=5, heuristic=heuristic, hidden_layers=1,
                                          hidden_features=3, max_map_back=30, timeout=60))
        region, hidden = res.layers[0], res.layers[1]
        truth = set(brute_force(net, x, res.label, region.dims, region.values))
        assert hidden.layer == 1 and hidden.grid_size > 1 and len(hidden.dims) == 3
        assert len(hidden.adversarial) + hidden.spurious <= hidden.candidates
        assert {tuple(a[region.dims]) for a in hidden.adversarial} <= truth
        mapped += len(hidden.adversarial)
    assert mapped >= 1
