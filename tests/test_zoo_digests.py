"""The zoo's weights are the committed ones on every machine: each recipe in tests/data/zoo_digests.json trains
(or loads from the tests' zoo cache, ``$RBL_CACHE_DIR``, which the other tests fill anyway) to weights whose
SHA-256 is the committed digest. A mismatch names the recipe. ``python scripts/zoo_digests.py`` regenerates the
file when a recipe or its training changes on purpose."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from robustbench_local.zoo import get_recipe, load_model
from robustbench_local.zoo.cache import default_cache_dir, weights_path
from robustbench_local.zoo.digest import state_dict_digest

DIGESTS = json.loads((Path(__file__).parent / "data" / "zoo_digests.json").read_text())["recipes"]


def test_the_digest_is_the_sha256_of_the_tensors_bytes_in_order() -> None:
    a, b = torch.tensor([1.0, -2.0]), torch.arange(6, dtype=torch.int64).reshape(2, 3).t()   # b not contiguous
    want = hashlib.sha256(a.numpy().tobytes() + b.contiguous().numpy().tobytes()).hexdigest()
    assert state_dict_digest({"a": a, "b": b}) == want
    assert state_dict_digest({"b": b, "a": a}) != want
    assert state_dict_digest({"a": a, "n": torch.tensor(0)}) != state_dict_digest({"a": a})   # 0-dim tensors count


@pytest.mark.parametrize("key", sorted(DIGESTS))
def test_the_zoo_recipe_trains_to_the_committed_weights(key: str) -> None:
    dataset, name = key.split("/")
    committed = DIGESTS[key]
    recipe = get_recipe(name, dataset)
    assert recipe.hash() == committed["recipe_hash"], (
        f"zoo recipe {key} changed (hash {recipe.hash()[:16]}, digest committed for {committed['recipe_hash'][:16]}): "
        f"if on purpose, regenerate its digest with `python scripts/zoo_digests.py {key}`")
    digest = state_dict_digest(load_model(name, dataset, threat_model=None).state_dict())
    assert digest == committed["sha256"], (
        f"zoo recipe {key} trained to different weights than committed (sha256 {digest[:16]}..., committed "
        f"{committed['sha256'][:16]}...): training is not reproducible here, or its code changed without a new "
        f"recipe hash (bump CACHE_FORMAT in robustbench_local/zoo/recipes.py), or the cached file "
        f"{weights_path(recipe, default_cache_dir())} is from older code (delete it). If the change is intended, "
        f"regenerate with `python scripts/zoo_digests.py {key}`")
