"""Tensor-by-tensor weight streaming from a Hugging Face checkpoint directory, never building the model.

Safetensors files are opened with ``safe_open`` and read one tensor at a time; ``.bin`` files through
``torch.load(mmap=True, weights_only=True)`` (memory-mapped: a tensor's pages are read when it is used).
Sharded checkpoints (``*.index.json``) are read shard by shard. A consumer that keeps only what it needs
(see ``lmdynamics.measure.weight_metric_rows``) therefore peaks near the largest single tensor, whatever
the model size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be analysed (missing, corrupt, mismatched); the message is one line for people."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file that exists but is truncated or garbled. ``problem`` says what is wrong; the message
    adds the generic fix, which callers that know where the checkpoint comes from replace (``with_fix``):
    a hub revision can be downloaded again, a run's own checkpoint cannot."""

    GENERIC_FIX = "delete it and download again"

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(f"{problem}; {fix or self.GENERIC_FIX}")
        self.problem = problem

    def with_fix(self, fix: str) -> str:
        return f"{self.problem}; {fix}"


def weight_files(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """The weight files of a checkpoint directory: safetensors preferred over .bin, shards in index order."""
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as err:
                raise CorruptCheckpointError(f"{path} is not a valid shard index ({err})") from err
            shards = list(dict.fromkeys(weight_map.values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise CorruptCheckpointError(f"{directory} lacks shard(s) {missing} listed in {name}")
            return [directory / s for s in shards]
        return [path]
    raise CheckpointError(f"{directory} holds no weights ({' or '.join(WEIGHT_FILES)}); is it a Hugging Face checkpoint?")


def check_weight_files(files: list[Path]) -> None:
    """Open every file's header (cheap) so a truncated or corrupt file fails before any computation."""
    for path in files:
        if path.suffix == ".safetensors":
            with _open_safetensors(path):
                pass
        else:
            _load_bin(path)


def iter_tensors(checkpoint: str | os.PathLike | list[Path], names: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` pairs of a checkpoint directory (or an explicit list of weight files), one
    tensor at a time, in file order. ``names`` restricts to those parameter names."""
    files = checkpoint if isinstance(checkpoint, list) else weight_files(checkpoint)
    for path in files:
        if path.suffix == ".safetensors":
            yield from _read_safetensors(path, names)
        else:
            state = _load_bin(path)
            for key in list(state):
                if names is None or key in names:
                    yield key, state.pop(key)
                else:
                    del state[key]
            del state


def tensor_shapes(checkpoint: str | os.PathLike | list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor, read from safetensors headers without loading data."""
    files = checkpoint if isinstance(checkpoint, list) else weight_files(checkpoint)
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        if path.suffix == ".safetensors":
            with _open_safetensors(path) as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        else:
            shapes.update({k: tuple(v.shape) for k, v in _load_bin(path).items()})
    return shapes


_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def _read_safetensors(path: Path, names: set[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of a safetensors file read one by one with plain file reads into fresh buffers.

    ``safe_open`` memory-maps the whole file, and every page it touches stays in the process's resident
    set until the file is closed, so a streamed shard would still end up counted whole. Reading each
    tensor's byte range (format: 8-byte little-endian header size, JSON header of dtype, shape and
    data_offsets, then the data) keeps the resident set at about one tensor.
    """
    with _open_safetensors(path):  # validates the header and sizes (raises CheckpointError)
        pass
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        for key, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if names is not None and key not in names:
                continue
            # no local name for the tensor: a suspended generator must not keep the previous one alive
            yield key, _read_tensor(fh, 8 + n, key, info, path)


def _read_tensor(fh, data_start: int, key: str, info: dict, path: Path) -> torch.Tensor:
    start, end = info["data_offsets"]
    dtype = _DTYPES.get(info["dtype"])
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {key} has dtype {info['dtype']}, which this reader does not know")
    fh.seek(data_start + start)
    buf = bytearray(end - start)
    if fh.readinto(buf) != len(buf):
        raise CorruptCheckpointError(f"{path} is a truncated safetensors file (tensor {key})")
    if not buf:
        return torch.empty(info["shape"], dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(info["shape"])


def _open_safetensors(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # SafetensorError for truncated files or a garbled header
        raise CorruptCheckpointError(f"{path} is a truncated or corrupt safetensors file ({err})") from err


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:
        raise CorruptCheckpointError(f"{path} is a truncated or corrupt PyTorch checkpoint ({type(err).__name__})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state
