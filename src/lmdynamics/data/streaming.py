"""Streaming training data for corpora too large to hold (the Pile): tokenise and pack on the fly.

The first ``val_documents`` documents of the stream are held out for validation; training reads the rest
in the stream's own order (Pythia's preshuffled data is already shuffled; ``shuffle_buffer`` adds a seeded
buffer shuffle for others). Block k of training is the same on every run, so a resumed run skips the blocks
already consumed (``start_step x global batch``) and sees exactly the batches an uninterrupted run sees.
Each rank keeps its slice of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def packed_blocks(texts: Iterable[str], tokenizer, eos_id: int | None, context_length: int) -> Iterator[torch.Tensor]:
    """Blocks of ``context_length`` tokens from a stream of documents, each document followed by EOS.

    ``tokenizer``: a transformers fast tokenizer or a ``tokenizers.Tokenizer``; ``eos_id`` None: no separator.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    buf: list[int] = []
    for text in texts:
        if not text:
            continue
        buf.extend(backend.encode(text, add_special_tokens=False).ids)
        if eos_id is not None:
            buf.append(eos_id)
        while len(buf) >= context_length:
            yield torch.tensor(buf[:context_length], dtype=torch.long)
            del buf[:context_length]


class StreamingBlocks(torch.utils.data.IterableDataset):
    """Micro-batches ``[batch_size, context_length]`` for optimizer steps ``start_step .. max_steps - 1``.

    Like ``StepBatchSampler``, its length is the whole epoch (``max_steps x accumulate``) even when it starts
    at a resume point, as Lightning expects of a loader resumed mid-epoch.
    """

    def __init__(self, texts_factory, tokenizer, eos_id: int, context_length: int, batch_size: int,
                 max_steps: int, accumulate: int = 1, start_step: int = 0, rank: int = 0, world: int = 1):
        self.texts_factory = texts_factory  # () -> iterable of training documents, the same each call
        self.tokenizer, self.eos_id, self.context_length = tokenizer, eos_id, context_length
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.global_batch = batch_size * world
        self.start, self.stop = start_step * accumulate, max_steps * accumulate

    def __len__(self) -> int:
        return self.stop

    def __iter__(self) -> Iterator[torch.Tensor]:
        blocks = packed_blocks(self.texts_factory(), self.tokenizer, self.eos_id, self.context_length)
        for _ in range(self.start * self.global_batch):  # the blocks earlier steps consumed
            if next(blocks, None) is None:
                return
        for _ in range(self.start, self.stop):
            batch = [b for _, b in zip(range(self.global_batch), blocks)]
            if len(batch) < self.global_batch:
                raise ValueError(f"the streamed corpus ran out after {_} micro-batches; lower trainer.max_steps or use more data")
            yield torch.stack(batch[self.rank::self.world])


def take_documents(rows: Iterable[dict], text_field: str, n: int | None) -> Iterator[str]:
    """Non-blank ``text_field`` values of ``rows``, at most ``n``."""
    count = 0
    for row in rows:
        if text_field not in row:
            raise ValueError(f"streamed rows have no field {text_field!r} (fields: {sorted(row)}); set data.text_field")
        text = row[text_field]
        if text and text.strip():
            yield text
            count += 1
            if n is not None and count >= n:
                return

