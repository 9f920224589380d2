"""Model factories a test hands to ``model=torch model.target=user_nets:...`` (tests/ is put on PYTHONPATH)."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from torch import nn

from rbl_core.architectures import build


def probability_cnn(arch: str, input_shape: list[int], num_classes: int) -> nn.Module:
    """A zoo architecture that ends in a softmax: it returns probabilities, which attacks must not be given."""
    return nn.Sequential(build(arch, tuple(input_shape), num_classes), nn.Softmax(dim=1))


def flaky_cnn(arch: str, input_shape: list[int], num_classes: int, fail_marker: str) -> nn.Module:
    """``build(...)``, except in the sweep job whose override is the text of the file ``fail_marker``.

    A transient failure a test switches on (write the file) and off (delete it), as a crashed node would be.
    """
    marker = Path(fail_marker)
    if marker.exists() and HydraConfig.initialized() and marker.read_text().strip() in HydraConfig.get().overrides.task:
        raise RuntimeError(f"injected failure in the job with {marker.read_text().strip()}")
    return build(arch, tuple(input_shape), num_classes)
