"""Where probe sequences come from: a local .txt/.jsonl/.parquet file, a hub dataset, or a training run.

Text is tokenised document by document, documents are joined with the EOS token (Pythia's packing) and the
stream is cut into windows of ``context_length`` tokens; the probe takes the first ``num_sequences``
windows (the paper used one batch of training data). A run directory's stored probe is reused as is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from lmdynamics.data.corpus import open_rows
from lmdynamics.data.streaming import packed_blocks, take_documents
from lmdynamics.probes.probeset import ProbeSet

TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".parquet")
PROBE_FILE = "probe.safetensors"


def load_tokenizer(source: str | os.PathLike):
    """A tokenizer from a tokenizer.json file or a directory holding one (see ``lmdynamics.data.tokenizer``)."""
    from lmdynamics.data.tokenizer import load_tokenizer as load

    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; give a tokenizer.json path")
    return load(str(path))


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary (token -> id), to detect a probe/model tokenizer mismatch."""
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode())
    return h.hexdigest()[:16]


def eos_token_id(tokenizer) -> int | None:
    """The id of the document separator (``<|endoftext|>`` for Pythia), if the tokenizer has one."""
    for tok in ("<|endoftext|>", "</s>", "<eos>", "[SEP]"):
        idx = _token_to_id(tokenizer, tok)
        if idx is not None:
            return idx
    return None


def read_texts(path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """Documents of a local file through ``datasets``, as for training corpora: .txt (documents end at a
    blank line), .jsonl/.json (field ``text_field``) or .parquet (column ``text_field``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe text file {path} does not exist")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise ValueError(f"probe file {path} must be .txt or .md (plain text), .jsonl, .json or .parquet (or a probe .safetensors)")
    rows, _, _ = open_rows(str(path), streaming=True)
    return take_documents(rows, text_field, None)


def read_hub_texts(name: str, split: str | None = None, text_field: str = "text") -> Iterator[str]:
    """Documents of a ``datasets`` dataset ("name" or "name:config"; offline it must be in the local cache).
    Without ``split``: validation, then test, then train."""
    path, _, config = name.partition(":")
    error = None
    for cand in [split] if split else ["validation", "test", "train"]:
        try:
            rows, _, _ = open_rows(path, hub_config=config or None, split=cand, streaming=True)
            return take_documents(rows, text_field, None)
        except ValueError as err:
            error = err
    raise error


def pack_texts(
    texts: Iterable[str], tokenizer, context_length: int, max_sequences: int, eos_id: int | None = None
) -> torch.Tensor:
    """The first ``max_sequences`` packed windows of ``context_length`` tokens (LongTensor [M, T], M <=
    max_sequences): documents joined with ``eos_id`` (default: the tokenizer's end-of-text token)."""
    if context_length < 1:
        raise ValueError(f"probe context_length must be >= 1, got {context_length}")
    if eos_id is None:
        eos_id = eos_token_id(tokenizer)
    blocks = list(itertools.islice(packed_blocks(texts, tokenizer, eos_id, context_length), max_sequences))
    return torch.stack(blocks) if blocks else torch.empty(0, context_length, dtype=torch.long)


def probe_from_source(
    source: str | os.PathLike,
    tokenizer=None,
    context_length: int = 2048,
    num_sequences: int = 128,
    positions: str | int = "last",
    seed: int = 0,
    split: str | None = None,
    text_field: str = "text",
) -> ProbeSet:
    """A probe from ``source``: a probe .safetensors file, a run directory holding ``probe.safetensors``,
    a local .txt/.jsonl/.json/.parquet file, or a hub dataset name (``name`` or ``name:config``).

    Text sources need ``tokenizer`` (a ``tokenizers.Tokenizer``, a transformers tokenizer, or a path to a
    tokenizer.json). A stored probe is returned as saved (its own N, T and positions).
    """
    src = str(source)
    path = Path(src)
    if path.is_dir():
        if (path / PROBE_FILE).is_file():
            return ProbeSet.load(path / PROBE_FILE)
        raise FileNotFoundError(f"run directory {path} has no {PROBE_FILE}; train with the probe enabled or give a text source")
    if path.suffix == ".safetensors":
        return ProbeSet.load(path)
    if tokenizer is None:
        raise ValueError(f"probe source {src!r} is text and needs a tokenizer; set tokenizer in the analysis config")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    if path.suffix.lower() in TEXT_SUFFIXES:
        texts = read_texts(path, text_field)
    elif path.exists():
        raise ValueError(f"probe source {path} is neither a directory nor a .txt/.md/.jsonl/.json/.parquet/.safetensors file")
    else:
        texts = read_hub_texts(src, split=split, text_field=text_field)
    seqs = pack_texts(texts, tokenizer, context_length, num_sequences)
    if seqs.shape[0] < num_sequences:
        raise ValueError(
            f"probe source {src!r} yields only {seqs.shape[0]} sequences of {context_length} tokens but "
            f"{num_sequences} are needed; lower probe.num_sequences or probe.context_length, or give more text"
        )
    meta = {"source": src, "tokenizer": tokenizer_fingerprint(tokenizer), "context_length": str(context_length)}
    return ProbeSet.from_sequences(seqs, num_sequences=num_sequences, positions=positions, seed=seed, meta=meta)


def _token_to_id(tokenizer, token: str) -> int | None:
    if hasattr(tokenizer, "token_to_id"):
        return tokenizer.token_to_id(token)
    idx = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    return None if idx is None or idx == unk else idx
