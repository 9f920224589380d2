"""Safe state-dict loading: ``.safetensors`` files, or ``.pt/.pth/.bin`` pickles read with ``weights_only=True``.

A pickle can run arbitrary code when it is loaded, so a checkpoint that is not plain tensors (a whole
pickled ``nn.Module``, an optimizer with custom classes, ...) is refused rather than unpickled.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from robustbench_local.sources.errors import ModelSourceError

__all__ = ["SAFETENSORS_SUFFIXES", "PICKLE_SUFFIXES", "load_state_dict"]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# Keys under which training scripts commonly nest the state dict next to metadata (the zoo's own cache: "state_dict").
WRAPPER_KEYS = ("state_dict", "model")

_REFUSED = ("weights_only loading refuses it because unpickling can run code; "
            "save model.state_dict() with torch.save, or use .safetensors")


def _display(path: Path) -> str:
    return str(path) if path.is_absolute() else f"{path} (resolved: {path.resolve()})"


def _read_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a multi-line how-to; the class it refused is the part worth one line.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it pickles {found.group(1)}" if found else "it pickles objects other than tensors"
        raise ModelSourceError(f"checkpoint {path} refused: {what} (e.g. a whole pickled nn.Module); {_REFUSED}") from err
    except Exception as err:  # truncated zip, not a torch file at all, ...: torch raises many types
        raise ModelSourceError(f"checkpoint {path} cannot be read by torch.load ({type(err).__name__}: "
                               f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no message'})") from err


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError (bad header), OSError
        raise ModelSourceError(f"checkpoint {path} is not a readable safetensors file ({err})") from err


def _unwrap(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    """The tensor dict inside ``obj``: itself, or one level down under "state_dict" / "model"."""
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ModelSourceError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict "
                               "(name -> tensor); save model.state_dict()")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise ModelSourceError(f"checkpoint {path} holds non-tensor entries {bad[:5]}{' ...' if len(bad) > 5 else ''}; "
                               f"expected a state dict (optionally under {' or '.join(map(repr, WRAPPER_KEYS))})")
    return dict(obj)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the state dict in ``path`` (.safetensors, or a weights_only .pt/.pth/.bin) onto the CPU."""
    p = Path(path)
    if not p.is_file():
        raise ModelSourceError(f"weights file {_display(p)} does not exist")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(p)
    if suffix in PICKLE_SUFFIXES:
        return _unwrap(p, _read_pickle(p))
    raise ModelSourceError(f"weights file {p} has suffix {p.suffix!r}; use .safetensors, or a state_dict "
                           f"saved as {'/'.join(PICKLE_SUFFIXES)}")
