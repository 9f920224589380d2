"""The one device of a run: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` resolved to a ``torch.device``, and its record."""
from __future__ import annotations

import itertools
import re

import torch
from torch import nn

DEVICE_SPECS = "cpu, cuda, cuda:N or auto"
HOST = torch.device("cpu")   # where data is read and a module without tensors computes
_CUDA = re.compile(r"cuda(?::(\d+))?")


class DeviceError(ValueError):
    """A device that cannot be used here: a bad string, CUDA without CUDA, or a GPU index that does not exist."""


def resolve_device(spec: str) -> torch.device:
    """``spec`` as a concrete ``torch.device`` (``auto``: the current GPU when CUDA is present, else the CPU)."""
    text = str(spec).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        raise DeviceError(f"device={spec} is not a device: choose {DEVICE_SPECS}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device={spec} requested but no CUDA device is available; use device=cpu or device=auto")
    # An explicit index, so the row can name the GPU that ran (plain "cuda" is the current one).
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device={spec}: no such GPU, this machine has {count} (cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


def module_device(model: nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its first parameter or buffer (the CPU for a module with neither)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return HOST


def describe_device(device: torch.device) -> dict[str, str]:
    """What a result row records of the device that ran: ``{"device": "cpu"}``, or ``cuda:N`` plus the GPU's name."""
    if device.type == "cuda":
        return {"device": str(device), "gpu": torch.cuda.get_device_name(device)}
    return {"device": str(device)}
