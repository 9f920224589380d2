"""Regenerate tests/data/zoo_digests.json: the digest of the weights each listed zoo recipe trains to.

    python scripts/zoo_digests.py                      # every recipe already in the file, trained afresh
    python scripts/zoo_digests.py digits/pgd_l2_cnn    # (re)compute these and add them to the file

Each recipe trains into a fresh temporary cache (``--cache-dir DIR`` reuses one instead), so the digest is of
what the current code trains on this machine, never of a stale cache file. tests/test_zoo_digests.py compares
the weights the tests train with the file. Regenerate only when a recipe or its training changed on purpose.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RBL_DATA_ROOT", str(REPO.parent / "shared" / "datasets"))

import rbl_core  # noqa: E402,F401  (first: pins the CPU kernels before torch runs anything)
import torch  # noqa: E402

from robustbench_local.zoo import get_recipe, load_model  # noqa: E402
from robustbench_local.zoo.digest import state_dict_digest  # noqa: E402

DIGESTS = REPO / "tests" / "data" / "zoo_digests.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="*", help="dataset/name; default: every recipe in the file")
    ap.add_argument("--cache-dir", help="train into (or load from) this zoo cache instead of a fresh one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    old = json.loads(DIGESTS.read_text())["recipes"] if DIGESTS.exists() else {}
    keys = args.recipes or list(old)
    if not keys:
        ap.error(f"{DIGESTS} is empty or missing: name the recipes, e.g. digits/standard_cnn")
    new = dict(old)
    with tempfile.TemporaryDirectory(prefix="rbl-digests-") as fresh:
        cache = args.cache_dir or fresh
        for key in keys:
            dataset, name = key.split("/")
            start = time.perf_counter()
            model = load_model(name, dataset, threat_model=None, cache_dir=cache)
            new[key] = {"recipe_hash": get_recipe(name, dataset).hash(), "sha256": state_dict_digest(model.state_dict())}
            print(f"{key}: {new[key]['sha256']} ({time.perf_counter() - start:.1f} s)", flush=True)
    DIGESTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"about": "SHA-256 of each zoo recipe's state_dict tensors in order (robustbench_local.zoo.digest); "
                    "checked by tests/test_zoo_digests.py, written by scripts/zoo_digests.py",
           "torch": torch.__version__.split("+")[0], "recipes": dict(sorted(new.items()))}
    DIGESTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {DIGESTS}")


if __name__ == "__main__":
    main()
