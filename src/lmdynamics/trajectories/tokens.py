"""The evaluation text as token blocks, and the token metadata the breakdowns group by.

Blocks: documents tokenised one by one, joined with the end-of-text id (Pythia's packing) and cut into
``num_blocks`` windows of ``block_tokens`` tokens; each token remembers its document. (The paper took 50
documents of 2048 tokens; packing also serves corpora of short documents.) The loss of a block's first token
has no context, so a block yields ``block_tokens - 1`` (context, token) pairs.

Token classes come from the tokenizer's own strings (byte-level BPE marks a leading space with ``Ġ``):
``whitespace`` (only spaces/newlines), ``digit`` (digits, optionally after a space), ``punctuation`` (only
punctuation or symbols, optionally after a space), ``word-initial`` (a space then letters), ``continuation``
(letters without a leading space: the inside or end of a word), ``special`` (added tokens such as
``<|endoftext|>``) and ``other`` (mixtures such as ``'s`` or ``x2``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import numpy as np
import torch

from .storage import TokenTable

__all__ = ["TOKEN_CLASSES", "evaluation_blocks", "packed_token_table", "token_classes", "token_counts",
           "frequency_buckets", "EvaluationTextTooShort"]

TOKEN_CLASSES = ("word-initial", "continuation", "digit", "punctuation", "whitespace", "special", "other")


class EvaluationTextTooShort(ValueError):
    pass


def evaluation_blocks(token_docs: Iterable[list[int]], num_blocks: int, block_tokens: int, eos_id: int | None):
    """(blocks (num_blocks, block_tokens) int64, TokenTable of the scored tokens, i.e. positions 1..T-1)."""
    if num_blocks <= 0 or block_tokens < 2:
        raise ValueError(f"need num_blocks >= 1 and block_tokens >= 2, got {num_blocks} and {block_tokens}")
    need = num_blocks * block_tokens
    ids, docs = [], []
    for d, doc in enumerate(token_docs):
        piece = list(doc) + ([eos_id] if eos_id is not None else [])
        ids.extend(piece)
        docs.extend([d] * len(piece))
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise EvaluationTextTooShort(
            f"the evaluation text has {len(ids)} tokens, fewer than the {num_blocks} x {block_tokens} = {need} requested; "
            f"give a longer text or fewer/shorter blocks")
    blocks = torch.tensor(ids[:need], dtype=torch.int64).view(num_blocks, block_tokens)
    doc = np.asarray(docs[:need], dtype=np.int32).reshape(num_blocks, block_tokens)
    pos = np.broadcast_to(np.arange(block_tokens, dtype=np.int32), (num_blocks, block_tokens))
    blk = np.broadcast_to(np.arange(num_blocks, dtype=np.int32)[:, None], (num_blocks, block_tokens))
    table = TokenTable(blocks[:, 1:].numpy(), pos[:, 1:], doc[:, 1:], blk[:, 1:])
    return blocks, table


def packed_token_table(blocks: torch.Tensor, eos_id: int) -> TokenTable:
    """The TokenTable of already packed blocks (N, T) (a run's validation blocks): positions 1..T-1 of each block,
    documents counted along the whole stream by the end-of-text ids (an end-of-text belongs to the document it ends)."""
    ids = blocks.numpy()
    document = np.cumsum(ids.reshape(-1) == eos_id).reshape(ids.shape) - (ids == eos_id)
    n, t = ids.shape
    return TokenTable(ids[:, 1:], np.broadcast_to(np.arange(1, t), (n, t - 1)), document[:, 1:],
                      np.broadcast_to(np.arange(n)[:, None], (n, t - 1)))


def _class_of(text: str, special: bool) -> str:
    if special:
        return "special"
    if text == "" or text.isspace():
        return "whitespace"
    lead = text[0].isspace()
    body = text.lstrip()
    if body.isdigit():
        return "digit"
    if all(unicodedata.category(ch)[0] in "PS" for ch in body):
        return "punctuation"
    if body.isalpha():
        return "word-initial" if lead else "continuation"
    return "other"


def _special_ids(tokenizer) -> set[int]:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    try:
        special |= {int(i) for i in tokenizer.added_tokens_decoder}
    except AttributeError:
        pass
    return special


def token_classes(tokenizer, ids, previous=None) -> np.ndarray:
    """The class (one of TOKEN_CLASSES) of each token id, from the token's decoded string.

    With ``previous`` (the id before each token), a letters-only token without a leading space that follows a
    whitespace-ending or special token (a word after a newline, or the first word of a document) is
    word-initial rather than a continuation.
    """
    ids = np.asarray(ids).reshape(-1)
    special = _special_ids(tokenizer)
    uniq, inverse = np.unique(ids, return_inverse=True)
    labels = np.array([_class_of(tokenizer.decode([int(i)]), int(i) in special) for i in uniq], dtype=object)[inverse]
    if previous is not None:
        prev = np.asarray(previous).reshape(-1)
        puniq, pinv = np.unique(prev, return_inverse=True)
        boundary = np.array([int(i) in special or tokenizer.decode([int(i)])[-1:].isspace() for i in puniq])[pinv]
        labels[(labels == "continuation") & boundary] = "word-initial"
    return labels


def token_counts(token_docs: Iterable[list[int]], vocab_size: int) -> np.ndarray:
    """Occurrences of every id in a tokenised corpus (int64, length vocab_size)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for doc in token_docs:
        if len(doc):
            counts += np.bincount(np.asarray(doc, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    return counts


def frequency_buckets(counts: np.ndarray, ids) -> np.ndarray:
    """Decade of each token's corpus count: ``0``, ``1-9``, ``10-99``, ``100-999``, ... (labels as strings)."""
    c = np.asarray(counts)[np.asarray(ids).reshape(-1)]
    decade = np.where(c > 0, np.floor(np.log10(np.maximum(c, 1))).astype(int), -1)
    return np.array(["0" if k < 0 else f"{10 ** k}-{10 ** (k + 1) - 1}" for k in decade], dtype=object)
