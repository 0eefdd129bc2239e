"""Tokenizers: a hub name, a local ``tokenizer.json``, or a byte-level BPE trained on the corpus and cached.

Every tokenizer is returned as a ``PreTrainedTokenizerFast`` so that it is saved with each checkpoint and
``AutoTokenizer.from_pretrained(checkpoint)`` gives it back. End-of-text is id 0 in the Pythia tokenizer and
in the BPE trained here (``<|endoftext|>`` = 0, ``<|padding|>`` = 1, as in GPT-NeoX-20B).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..atomic import atomic_path

EOS, PAD = "<|endoftext|>", "<|padding|>"


def _wrap(path: Path) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    vocab = tok.get_vocab()
    if EOS in vocab:
        tok.eos_token = EOS
        tok.bos_token = EOS
    if PAD in vocab:
        tok.pad_token = PAD
    return tok


def train_bpe(documents: Iterable[str], vocab_size: int, path: Path) -> Path:
    """Train a byte-level BPE (GPT-2 style pre-tokenisation) and write its tokenizer.json atomically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer=trainer)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return path


def load_tokenizer(
    name_or_path: str,
    *,
    documents: list[str] | None = None,
    corpus_id: str = "",
    cache_dir: str | os.PathLike = ".cache",
) -> PreTrainedTokenizerFast:
    """Resolve a tokenizer spec.

    ``bpe:<vocab>`` trains a byte-level BPE of that size on ``documents`` (cached by corpus id and size);
    a path to a ``tokenizer.json`` file or a directory holding one loads it; anything else is a hub name.
    """
    if name_or_path.startswith("bpe:"):
        try:
            vocab = int(name_or_path.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"tokenizer {name_or_path!r}: write bpe:<vocab size>, e.g. bpe:4096") from None
        if vocab < 260:
            raise ValueError(f"tokenizer {name_or_path!r}: a byte-level BPE needs a vocabulary of at least 260")
        if not documents:
            raise ValueError("tokenizer bpe:<vocab> needs a corpus to train on, and the corpus is empty")
        key = hashlib.sha256(f"{corpus_id}|{vocab}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / "tokenizers" / f"bpe-{vocab}-{key}.json"
        if not path.is_file():
            train_bpe(documents, vocab, path)
        return _wrap(path)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(path))
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist; give a tokenizer.json path, a hub name or bpe:<vocab>")
        return _wrap(path)
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except OSError as err:
        raise ValueError(f"tokenizer {name_or_path!r} could not be loaded from the hub or its cache ({str(err).splitlines()[0]}); give a local tokenizer.json or bpe:<vocab>") from None


def definition_hash(tok: PreTrainedTokenizerFast) -> str:
    """A hash of the tokenizer's full definition, used to key token caches."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]
