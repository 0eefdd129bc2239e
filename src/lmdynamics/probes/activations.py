"""Probe activations on disk: one safetensors file per (model, step), keys ``L03.mlp``, ``L-1.final``.

Stored compactly (fp16 by default, the live callbacks' and the offline cache's format). A key whose values
overflow the storage dtype is kept in float32 instead, so a large model's residual stream never turns
into inf. Written atomically.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmdynamics.probes.capture import Activations
from lmdynamics.atomic import atomic_path

_KEY = re.compile(r"^L(-?\d+)\.(.+)$")


def activation_key(layer: int, component: str) -> str:
    """The file key of ``(layer, component)``: ``L03.mlp``, ``L-1.final``."""
    return f"L{layer:02d}.{component}" if layer >= 0 else f"L{layer}.{component}"


def parse_activation_key(key: str) -> tuple[int, str]:
    m = _KEY.match(key)
    if not m:
        raise ValueError(f"{key!r} is not an activation key like 'L03.mlp'")
    return int(m.group(1)), m.group(2)


def stored_form(name: str, value: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """``value`` as :func:`save_activations` stores it: cast to ``dtype`` on the CPU, or kept in float32 (with a
    warning) where ``dtype`` would overflow."""
    stored = value.detach().to("cpu").to(dtype).contiguous()
    if dtype != torch.float32 and not torch.isfinite(stored).all() and torch.isfinite(value).all():
        warnings.warn(f"activations {name} overflow {dtype}; stored as float32", stacklevel=3)
        stored = value.detach().to("cpu", torch.float32).contiguous()
    return stored


def as_stored(acts: dict[tuple[int, str], torch.Tensor], dtype: torch.dtype = torch.float16) -> dict:
    """Activations with the values a file of them holds (float32 tensors): what CKA computed from the stored
    files (end-of-run CKA-to-final, the offline analysis) sees, so a value computed live equals it."""
    return Activations({key: stored_form(activation_key(*key), x, dtype).float() for key, x in acts.items()},
                       loss=getattr(acts, "loss", None), forward_passes=getattr(acts, "forward_passes", 0),
                       metadata=getattr(acts, "metadata", None))


def save_activations(
    path: str | os.PathLike,
    acts: dict[tuple[int, str], torch.Tensor],
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write activations to ``path`` (safetensors) in ``dtype``; metadata defaults to ``acts.metadata``."""
    tensors = {}
    for (layer, component), value in acts.items():
        tensors[activation_key(layer, component)] = stored_form(activation_key(layer, component), value, dtype)
    meta = dict(getattr(acts, "metadata", {}) or {})
    if getattr(acts, "forward_passes", 0):
        meta["forward_passes"] = str(acts.forward_passes)
    if getattr(acts, "loss", None) is not None:
        meta["loss"] = repr(float(acts.loss))
    meta.update(metadata or {})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in meta.items()})
    return path


def load_activations(path: str | os.PathLike) -> Activations:
    """Read activations written by :func:`save_activations` as float32 tensors (``.metadata``, ``.loss`` set)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"activation file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            acts = Activations({parse_activation_key(k): f.get_tensor(k).float() for k in f.keys()}, metadata=meta)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # safetensors' own error type for truncated or corrupt files
        raise ValueError(f"activation file {path} is corrupt ({err}); delete it to recompute") from err
    if "loss" in meta:
        acts.loss = float(meta["loss"])
    return acts


class ActivationFile(Mapping):
    """A read-only, lazy view of an activation file: each ``(layer, component)`` is read (as float32) only
    when accessed, so CKA over a large model's cache holds one matrix at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"activation file {self.path} does not exist")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                self.metadata = dict(f.metadata() or {})
                self._keys = {parse_activation_key(k): k for k in f.keys()}
        except (FileNotFoundError, ValueError):
            raise
        except Exception as err:
            raise ValueError(f"activation file {self.path} is corrupt ({err}); delete it to recompute") from err
        self.loss = float(self.metadata["loss"]) if "loss" in self.metadata else None

    def __getitem__(self, key: tuple[int, str]) -> torch.Tensor:
        name = self._keys[key]
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(name).float()

    def __iter__(self):
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def open_activations(path: str | os.PathLike) -> ActivationFile:
    """Open an activation file lazily (see :class:`ActivationFile`)."""
    return ActivationFile(path)
