"""Tokenise documents and pack them into fixed-length blocks with EOS separators; deterministic batch order.

Packing follows GPT-NeoX/Pythia: documents are concatenated, each followed by the end-of-text id, and the
stream is cut into blocks of ``context_length`` tokens (the tail shorter than a block is dropped).
"""

from __future__ import annotations

import numpy as np
import torch


def tokenize_stream(documents: list[str], tokenizer, eos_id: int, batch: int = 1024) -> np.ndarray:
    """All documents as one token stream, each document followed by ``eos_id``."""
    backend = tokenizer.backend_tokenizer
    pieces: list[np.ndarray] = []
    eos = np.array([eos_id], dtype=np.int64)
    for start in range(0, len(documents), batch):
        for enc in backend.encode_batch(documents[start:start + batch], add_special_tokens=False):
            pieces.append(np.asarray(enc.ids, dtype=np.int64))
            pieces.append(eos)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return stream.astype(np.int32 if stream.size and stream.max() >= 2**16 else np.uint16)


def pack(stream: np.ndarray, context_length: int) -> torch.Tensor:
    """Cut a token stream into [n_blocks, context_length] (int64); the incomplete tail is dropped."""
    n = len(stream) // context_length
    return torch.from_numpy(stream[: n * context_length].astype(np.int64)).view(n, context_length)


def split_documents(documents: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle documents with ``seed`` and hold out ``val_fraction`` of them (at least one) for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must lie in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(documents))
    n_val = max(1, int(round(val_fraction * len(documents))))
    if n_val >= len(documents):
        raise ValueError(f"the corpus has {len(documents)} document(s): too few for a training and a validation split")
    val = [documents[i] for i in order[:n_val]]
    train = [documents[i] for i in order[n_val:]]
    return train, val


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """The micro-batches of optimizer steps ``0 .. max_steps - 1``: training is one epoch of exactly
    ``max_steps x accumulate`` micro-batches.

    The batch at micro-batch index m is a pure function of (seed, m): block order is a fresh permutation per
    pass over the data, drawn from a generator seeded with (seed, pass). A run resumed at step k iterates from
    micro-batch ``k x accumulate`` on, while its length stays the whole epoch: Lightning resumes a loader
    mid-epoch by counting the batches done before the checkpoint as already fetched, so it then sees exactly
    the batches an uninterrupted run sees from step k on, in the same epoch.
    """

    def __init__(self, num_blocks: int, batch_size: int, seed: int, max_steps: int,
                 accumulate: int = 1, start_step: int = 0):
        if num_blocks < batch_size:
            raise ValueError(f"the training split packs into {num_blocks} block(s), fewer than data.batch_size {batch_size}; use more data, a shorter context or a smaller batch")
        self.num_blocks, self.batch_size, self.seed = num_blocks, batch_size, seed
        self.per_pass = num_blocks // batch_size  # full batches per pass over the data
        self.start = start_step * accumulate
        self.stop = max_steps * accumulate

    def _permutation(self, pass_index: int) -> np.ndarray:
        return np.random.default_rng([self.seed, pass_index]).permutation(self.num_blocks)

    def batch(self, micro_index: int) -> list[int]:
        pass_index, within = divmod(micro_index, self.per_pass)
        perm = self._permutation(pass_index)
        return perm[within * self.batch_size:(within + 1) * self.batch_size].tolist()

    def __iter__(self):
        cached_pass, perm = -1, None
        for m in range(self.start, self.stop):
            pass_index, within = divmod(m, self.per_pass)
            if pass_index != cached_pass:
                cached_pass, perm = pass_index, self._permutation(pass_index)
            yield perm[within * self.batch_size:(within + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        """The whole epoch (``max_steps x accumulate``), also when iteration starts at a resume point."""
        return self.stop
