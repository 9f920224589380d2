"""Model zoo: default accuracy, cache keyed by recipe hash, safe loading, clear lookup errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from robustbench_local.data import load_dataset
from robustbench_local.zoo import ZooError, get_recipe, list_models, load_model
from robustbench_local.zoo.cache import load_or_train, weights_path
from rbl_core.training import accuracy


def test_default_digits_cnn_is_accurate(digits_cnn):
    assert not digits_cnn.training
    assert accuracy(digits_cnn, load_dataset("digits", "test")) >= 0.95


def test_cache_trains_once_then_loads_weights_only(tmp_path):
    recipe = dataclasses.replace(get_recipe("standard_mlp_tiny", "digits"), params={"epochs": 2, "lr": 3e-3, "batch_size": 128})
    first = load_or_train(recipe, tmp_path)
    path = weights_path(recipe, tmp_path)
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    second = load_or_train(recipe, tmp_path)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert "state_dict" in torch.load(path, weights_only=True)
    changed = dataclasses.replace(recipe, seed=1)
    assert changed.hash() != recipe.hash() and weights_path(changed, tmp_path) != path


def test_lookup_errors_list_the_choices():
    with pytest.raises(ZooError, match="choose one of .*standard_cnn"):
        load_model("resnet9000", "digits")
    with pytest.raises(ZooError, match="exists for digits"):
        load_model("standard_mlp_tiny", "cifar10")
    with pytest.raises(ZooError, match="threat models"):
        load_model("pgd_l2_cnn", "digits", threat_model="Linf")
    names = {(r.dataset, r.name) for r in list_models()}
    assert {("digits", "standard_cnn"), ("mnist", "standard_cnn"), ("cifar10", "pgd_linf_cnn")} <= names


_TINY = {"epochs": 1, "lr": 3e-3, "batch_size": 256}


def build_on_top_of_tiny(recipe, train):
    """A builder that, like DVERGE, first loads another zoo recipe without naming a cache."""
    base = load_or_train(dataclasses.replace(get_recipe("standard_mlp_tiny", "digits"), params=_TINY))
    return base


def test_nested_builds_use_the_outer_cache_dir(tmp_path):
    base = dataclasses.replace(get_recipe("standard_mlp_tiny", "digits"), params=_TINY)
    outer = dataclasses.replace(base, name="stacked", builder="test_zoo:build_on_top_of_tiny")
    load_or_train(outer, tmp_path)
    assert weights_path(outer, tmp_path).exists()
    assert weights_path(base, tmp_path).exists()  # the nested load landed in the same cache
