"""Corpus frequency of every token id, for the frequency breakdown of the trajectory report (Xia et al. 2023
group tokens by how often the training corpus holds them).

Where the counts come from (``report --counts`` / ``--corpus``):
- a counts file: ``.npy`` (one count per id) or ``.json`` ``{id: count}``;
- ``python-docs``: the bundled corpus's training split as a run with the default data settings packs it
  (``data.seed`` 1234, ``val_fraction`` 0.05, ``context_length`` 128, the last incomplete block dropped; what
  ``make train`` trains on), tokenised with the trajectories' tokenizer;
- a run directory: that run's training split exactly as it trained on it, rebuilt from the ``data`` section of
  its ``config.yaml`` with the tokenizer saved beside its last checkpoint; the corpus id must equal the one in
  its ``run.json`` (else the corpus changed since training) and the tokenizer the trajectories' one;
- any other path: a text file (.txt documents separated by blank lines, .jsonl, .parquet), every document counted.
Training splits count every token of the packed training blocks, end-of-text separators included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data.corpus import BUNDLED
from .run_data import prepared_datamodule, run_data_settings
from .tokens import token_counts

__all__ = ["counts_file", "corpus_counts"]


def counts_file(path: str | os.PathLike, vocab_size: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--counts {path} does not exist; give a .npy (one count per id) or a .json {{id: count}}")
    if path.suffix == ".npy":
        return np.load(path).astype(np.int64)
    if path.suffix == ".json":
        counts = np.zeros(vocab_size, dtype=np.int64)
        for k, v in json.loads(path.read_text()).items():
            counts[int(k)] = int(v)
        return counts
    raise ValueError(f"--counts {path}: give a .npy (one count per id) or a .json {{id: count}}")


def corpus_counts(spec: str, tokenizer, tokenizer_file: str | os.PathLike, vocab_size: int,
                  run_tokenizer_file: Path | None = None) -> np.ndarray:
    """Counts of every id (length ``vocab_size``) in the corpus ``spec`` (see the module docstring).

    ``tokenizer``/``tokenizer_file``: the trajectories' tokenizer; ``run_tokenizer_file``: for a run directory,
    the tokenizer.json saved with its last checkpoint (None: rebuild the one its config names).
    """
    from ..probes.sources import read_texts, tokenizer_fingerprint

    path = Path(spec)
    if spec == BUNDLED or path.is_dir():
        if spec == BUNDLED:
            (data, corpus_id), what = ({"source": BUNDLED, "tokenizer": str(tokenizer_file)}, ""), "the bundled corpus"
        else:
            (data, corpus_id), what = run_data_settings(path, run_tokenizer_file), f"run {path}"
            if data.get("source") == "synthetic" or data.get("streaming"):
                kind = "a synthetic language" if data.get("source") == "synthetic" else "a streamed corpus"
                raise ValueError(f"--corpus {spec}: the run trained on {kind}, which has no fixed training split to count; give --counts")
        dm = prepared_datamodule(data, corpus_id, f"--corpus {spec}")
        if tokenizer_fingerprint(dm.tokenizer) != tokenizer_fingerprint(tokenizer):
            raise ValueError(f"--corpus {spec}: the tokenizer of {what} differs from the trajectories' tokenizer; "
                             f"count a corpus of the same model family or give --counts")
        return token_counts([dm.train_blocks.reshape(-1).numpy()], vocab_size)
    if not path.is_file():
        raise FileNotFoundError(f"--corpus {spec}: no such file or run directory; give a text file, a run directory or {BUNDLED}")
    return token_counts((tokenizer(t, add_special_tokens=False)["input_ids"] for t in read_texts(path)), vocab_size)
