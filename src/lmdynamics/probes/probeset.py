"""The probe set: a fixed batch of token sequences and, per sequence, the positions whose activations we keep.

The paper's choice ("Tending Towards Stability", 2024) is 128 sequences and one vector per sequence, the
last position, so every activation matrix is 128 x d. Sampling P positions per sequence gives N*P vectors
(a better-conditioned CKA). Rows of every captured activation matrix are sequence-major: row ``n * P + p``
is sequence n at ``positions[n, p]``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmdynamics.atomic import atomic_path


@dataclass
class ProbeSet:
    """``input_ids`` LongTensor [N, T]; ``positions`` LongTensor [N, P] (positions kept per sequence).

    ``meta`` holds free-form string metadata saved with the probe (e.g. its source and the fingerprint of
    the tokenizer that produced it, used to refuse a checkpoint whose tokenizer does not match).
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids, pos = self.input_ids, self.positions
        if ids.ndim != 2 or pos.ndim != 2 or ids.shape[0] != pos.shape[0]:
            raise ValueError(
                f"probe input_ids must be [N, T] and positions [N, P] with the same N; got {tuple(ids.shape)} "
                f"and {tuple(pos.shape)}"
            )
        if ids.shape[0] == 0 or ids.shape[1] == 0 or pos.shape[1] == 0:
            raise ValueError(f"probe is empty (input_ids {tuple(ids.shape)}, positions {tuple(pos.shape)})")
        if ids.dtype != torch.long:
            self.input_ids = ids = ids.long()
        if pos.dtype != torch.long:
            self.positions = pos = pos.long()
        if int(pos.min()) < 0 or int(pos.max()) >= ids.shape[1]:
            raise ValueError(f"probe positions must lie in [0, {ids.shape[1]}); got [{int(pos.min())}, {int(pos.max())}]")
        if int(ids.min()) < 0:
            raise ValueError("probe input_ids contain negative token ids")
        self.meta = {str(k): str(v) for k, v in self.meta.items()}

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_positions(self) -> int:
        return int(self.positions.shape[1])

    @property
    def num_vectors(self) -> int:
        """Rows of every captured activation matrix (N * P)."""
        return self.num_sequences * self.num_positions

    def fingerprint(self) -> str:
        """A short hash of the token ids and positions: two probes with equal fingerprints give equal rows."""
        h = hashlib.sha256()
        for t in (self.input_ids, self.positions):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def from_sequences(
        cls,
        token_sequences: torch.Tensor | Iterable[Sequence[int] | torch.Tensor],
        num_sequences: int = 128,
        positions: str | int = "last",
        seed: int = 0,
        context_length: int | None = None,
        meta: dict[str, str] | None = None,
    ) -> ProbeSet:
        """Build a probe from token sequences.

        ``token_sequences``: a LongTensor [M, T] or sequences of token ids. With ``context_length`` each
        sequence is cut to that length and shorter ones are dropped; without it all must have one length.
        If more than ``num_sequences`` are given, ``num_sequences`` of them are drawn with ``seed`` (kept in
        their original order). ``positions``: ``"last"`` (the paper's choice) or an int P: P distinct
        positions per sequence drawn uniformly with ``seed`` (sorted).
        """
        if num_sequences < 1:
            raise ValueError(f"probe num_sequences must be >= 1, got {num_sequences}")
        seqs = _as_matrix(token_sequences, context_length)
        m, t = seqs.shape
        if m < num_sequences:
            raise ValueError(
                f"the probe needs {num_sequences} sequences but only {m} of length {t} are available; "
                f"lower num_sequences or give more data"
            )
        gen = torch.Generator().manual_seed(seed)
        if m > num_sequences:
            keep = torch.randperm(m, generator=gen)[:num_sequences].sort().values
            seqs = seqs[keep]
        if positions == "last":
            pos = torch.full((num_sequences, 1), t - 1, dtype=torch.long)
        elif isinstance(positions, int) and not isinstance(positions, bool):
            if not 1 <= positions <= t:
                raise ValueError(f"probe positions must be 'last' or an int in [1, {t}] (sequence length), got {positions}")
            pos = torch.stack([torch.randperm(t, generator=gen)[:positions].sort().values for _ in range(num_sequences)])
        else:
            raise ValueError(f"probe positions must be 'last' or an int P, got {positions!r}")
        out_meta = {"positions": str(positions), "seed": str(seed)}
        out_meta.update(meta or {})
        return cls(seqs.contiguous(), pos.contiguous(), out_meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the probe to a safetensors file atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(
                {"input_ids": self.input_ids.contiguous(), "positions": self.positions.contiguous()},
                str(tmp),
                metadata=dict(self.meta),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProbeSet:
        """Read a probe written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"probe file {path} does not exist; give a probe file, a run directory or a text source")
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                if not {"input_ids", "positions"} <= keys:
                    raise ValueError(f"{path} is not a probe file (keys {sorted(keys)}; expected input_ids and positions)")
                return cls(f.get_tensor("input_ids"), f.get_tensor("positions"), dict(f.metadata() or {}))
        except ValueError:
            raise
        except Exception as err:  # safetensors raises its own error type for corrupt files
            raise ValueError(f"{path} is not a readable probe file ({err}); recreate it") from err


def _as_matrix(token_sequences, context_length: int | None) -> torch.Tensor:
    if isinstance(token_sequences, torch.Tensor):
        if token_sequences.ndim != 2:
            raise ValueError(f"token_sequences must be a 2-D [M, T] tensor, got shape {tuple(token_sequences.shape)}")
        seqs = token_sequences.long()
        if context_length is not None:
            if seqs.shape[1] < context_length:
                raise ValueError(f"sequences of length {seqs.shape[1]} are shorter than context_length {context_length}")
            seqs = seqs[:, :context_length]
        return seqs
    rows = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in token_sequences]
    if context_length is not None:
        rows = [r[:context_length] for r in rows if r.numel() >= context_length]
    if not rows:
        raise ValueError("no token sequences to build the probe from (or none as long as context_length)")
    lengths = {r.numel() for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"token sequences have different lengths {sorted(lengths)[:5]}...; pass context_length to cut them")
    return torch.stack(rows)
