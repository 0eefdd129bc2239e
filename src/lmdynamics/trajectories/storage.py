"""Compact columnar storage of per-token trajectories: one directory per model.

Layout of ``<root>/<model>/``:
- ``tokens.npz``: the evaluation tokens, written once: ``ids`` (int32), ``position`` (index in its block,
  int32), ``document`` (source document index, int32), ``block`` (int32), and ``blocks`` (the whole token
  blocks, int32 (N, T), first tokens included) so the same tokens can be recorded again from checkpoints.
- ``losses.f16``: raw little-endian float16, one row of ``num_tokens`` losses (nats) per checkpoint, in the
  order appended. Two bytes a value: float16 keeps 11 significant bits, a relative error <= 2^-11 (about
  0.005 nats at a loss of 10); losses above 65504 nats (never met in practice) would read back as inf.
- ``manifest.json``: what is committed: the checkpoints (step, tokens, validation perplexity, in the row order
  of ``losses.f16``) and the model's metadata. It is the truth: rows past its count are ignored.

Appending one checkpoint: cut ``losses.f16`` back to the committed rows (dropping what a killed writer left),
append the row, fsync, then replace the manifest atomically. A kill at any point leaves either the old or the
new manifest, never a half row in view and never a checkpoint twice; ``has(step)`` tells a resumed recorder
what to skip. One writer per model directory at a time.
"""

from __future__ import annotations

import json
import os

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json_atomic
from ..layout import slug

__all__ = ["Trajectories", "TrajectoryStore", "TokenTable", "model_dir_name", "open_stores"]

VALUE_DTYPE = np.dtype("<f2")
FORMAT_VERSION = 1
TOKENS_FILE, LOSSES_FILE, MANIFEST_FILE = "tokens.npz", "losses.f16", "manifest.json"


def model_dir_name(name: str) -> str:
    """A file-system-safe directory name for a model label (``EleutherAI/pythia-70m`` -> ``EleutherAI--pythia-70m``)."""
    return slug(name)


@dataclass
class TokenTable:
    """Where each stored value comes from: token id, position in its block, source document, block."""

    ids: np.ndarray
    position: np.ndarray
    document: np.ndarray
    block: np.ndarray

    def __post_init__(self):
        for name in ("ids", "position", "document", "block"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int32).reshape(-1))
        n = len(self.ids)
        if any(len(getattr(self, k)) != n for k in ("position", "document", "block")):
            raise ValueError("TokenTable: ids, position, document and block must have one entry per token")

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for k in ("ids", "position", "document", "block"):
            h.update(getattr(self, k).tobytes())
        return h.hexdigest()[:16]


@dataclass(eq=False)  # arrays inside: compare by identity
class Trajectories:
    """One model's trajectories: ``losses`` (tokens x checkpoints, float32 nats), checkpoints sorted by step."""

    losses: np.ndarray
    steps: np.ndarray
    tokens: np.ndarray
    val_ppl: np.ndarray
    token_table: TokenTable
    meta: dict

    @property
    def model(self) -> str:
        return str(self.meta.get("model", ""))


class TrajectoryStore:
    """One model's trajectory directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        manifest = self.dir / MANIFEST_FILE
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.dir} is not a trajectory store (no {MANIFEST_FILE}); record trajectories first")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"{manifest}: format version {self.manifest.get('version')} is not {FORMAT_VERSION}")
        self.num_tokens = int(self.manifest["num_tokens"])

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str | os.PathLike, tokens: TokenTable, meta: dict, blocks=None) -> "TrajectoryStore":
        """A new store (or the existing one, if it holds the same tokens: a resumed recording)."""
        directory = Path(directory)
        if (directory / MANIFEST_FILE).is_file():
            store = cls(directory)
            if store.manifest["tokens_fingerprint"] != tokens.fingerprint():
                raise ValueError(f"{directory} holds trajectories of other evaluation tokens; choose another --out or remove it")
            return store
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / TOKENS_FILE) as tmp:
            with open(tmp, "wb") as fh:
                extra = {} if blocks is None else {"blocks": np.asarray(blocks, dtype=np.int32)}
                np.savez(fh, ids=tokens.ids, position=tokens.position, document=tokens.document, block=tokens.block, **extra)
        manifest = {"version": FORMAT_VERSION, "num_tokens": len(tokens), "dtype": "float16", "unit": "nats",
                    "tokens_fingerprint": tokens.fingerprint(), "meta": dict(meta), "checkpoints": []}
        write_json_atomic(directory / MANIFEST_FILE, manifest)
        return cls(directory)

    # -- appending ------------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return [int(c["step"]) for c in self.manifest["checkpoints"]]

    def has(self, step: int) -> bool:
        return int(step) in self.steps

    def append(self, step: int, losses, val_ppl: float, tokens: int) -> bool:
        """Commit one checkpoint's losses (num_tokens,); False (nothing written) if the step is already stored."""
        if self.has(step):
            return False
        row = np.asarray(losses, dtype=np.float32).reshape(-1)
        if row.shape[0] != self.num_tokens:
            raise ValueError(f"step {step}: {row.shape[0]} losses for a store of {self.num_tokens} tokens")
        committed = len(self.manifest["checkpoints"]) * self.num_tokens * VALUE_DTYPE.itemsize
        path = self.dir / LOSSES_FILE
        with open(path, "r+b" if path.exists() else "wb") as fh:
            fh.truncate(committed)  # drop a row a killed writer left uncommitted
            fh.seek(committed)
            fh.write(row.astype(VALUE_DTYPE).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        manifest = dict(self.manifest)
        manifest["checkpoints"] = [*self.manifest["checkpoints"], {"step": int(step), "tokens": int(tokens), "val_ppl": float(val_ppl)}]
        write_json_atomic(self.dir / MANIFEST_FILE, manifest)
        self.manifest = manifest
        return True

    # -- reading --------------------------------------------------------------------------------
    def token_table(self) -> TokenTable:
        with np.load(self.dir / TOKENS_FILE) as z:
            return TokenTable(z["ids"], z["position"], z["document"], z["block"])

    def blocks(self):
        """The evaluation blocks (N, T) as int64 torch ids, or None if the recorder did not keep them."""
        import torch

        with np.load(self.dir / TOKENS_FILE) as z:
            return torch.from_numpy(z["blocks"].astype(np.int64)) if "blocks" in z.files else None

    def previous_ids(self):
        """The id before each stored token (from the kept blocks), or None without them."""
        blocks = self.blocks()
        if blocks is None:
            return None
        table = self.token_table()
        return blocks.numpy()[table.block, table.position - 1]

    def read(self) -> Trajectories:
        """The (tokens x checkpoints) matrix, checkpoints sorted by step, as float32."""
        ckpts = self.manifest["checkpoints"]
        c, n = len(ckpts), self.num_tokens
        raw = np.fromfile(self.dir / LOSSES_FILE, dtype=VALUE_DTYPE, count=c * n) if c else np.zeros(0, VALUE_DTYPE)
        if raw.size != c * n:
            raise ValueError(f"{self.dir / LOSSES_FILE} is shorter than its manifest ({raw.size} of {c * n} values); the store is damaged")
        steps = np.array([x["step"] for x in ckpts], dtype=np.int64)
        order = np.argsort(steps, kind="stable")
        rows = raw.reshape(c, n)[order]
        losses = np.ascontiguousarray(rows.T, dtype=np.float32)
        return Trajectories(losses, steps[order], np.array([ckpts[i]["tokens"] for i in order], dtype=np.int64),
                            np.array([ckpts[i]["val_ppl"] for i in order], dtype=np.float64), self.token_table(),
                            dict(self.manifest["meta"]))


def open_stores(root: str | os.PathLike) -> list[TrajectoryStore]:
    """Every model store under ``root`` (sorted by directory name)."""
    root = Path(root)
    stores = [TrajectoryStore(p.parent) for p in sorted(root.glob(f"*/{MANIFEST_FILE}"))]
    if not stores:
        raise FileNotFoundError(f"no trajectory stores under {root}; record trajectories there first")
    return stores
