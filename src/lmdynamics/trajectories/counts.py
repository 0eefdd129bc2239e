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
import yaml

from ..data.corpus import BUNDLED
from ..layout import RunLayout
from .tokens import token_counts

__all__ = ["counts_file", "training_split_tokens", "corpus_counts"]


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


def training_split_tokens(data: dict) -> tuple[np.ndarray, str, object]:
    """The packed training blocks of the data settings ``data`` (``TextDataModule`` keyword arguments) as one
    token stream, the corpus id and the tokenizer."""
    from ..data.datamodule import TextDataModule

    dm = TextDataModule(**data)
    dm.prepare()
    return dm.train_blocks.reshape(-1).numpy(), dm.corpus_id, dm.tokenizer


def _run_data(run: Path, tokenizer_file: Path | None) -> tuple[dict, str]:
    layout = RunLayout(run)
    if not layout.config.is_file() or not layout.run_json.is_file():
        raise FileNotFoundError(f"--corpus {run}: a run directory needs config.yaml and run.json (written by training); "
                                f"give --counts or a text file instead")
    data = dict((yaml.safe_load(layout.config.read_text()) or {}).get("data") or {})
    if data.get("source") == "synthetic" or data.get("streaming"):
        what = "a synthetic language" if data.get("source") == "synthetic" else "a streamed corpus"
        raise ValueError(f"--corpus {run}: the run trained on {what}, which has no fixed training split to count; give --counts")
    if tokenizer_file is not None:
        data["tokenizer"] = str(tokenizer_file)  # the tokenizer the run saved, not a re-derivation of its spec
    return data, json.loads(layout.run_json.read_text()).get("corpus_id", "")


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
            data, want_id, what = {"source": BUNDLED, "tokenizer": str(tokenizer_file)}, None, "the bundled corpus"
        else:
            (data, want_id), what = _run_data(path, run_tokenizer_file), f"run {path}"
        tokens, corpus_id, run_tok = training_split_tokens(data)
        if want_id and corpus_id != want_id:
            raise ValueError(f"--corpus {spec}: the corpus now reads as {corpus_id}, not {want_id} as in run.json (it changed "
                             f"since training); give --counts")
        if tokenizer_fingerprint(run_tok) != tokenizer_fingerprint(tokenizer):
            raise ValueError(f"--corpus {spec}: the tokenizer of {what} differs from the trajectories' tokenizer; "
                             f"count a corpus of the same model family or give --counts")
        return token_counts([tokens], vocab_size)
    if not path.is_file():
        raise FileNotFoundError(f"--corpus {spec}: no such file or run directory; give a text file, a run directory or {BUNDLED}")
    return token_counts((tokenizer(t, add_special_tokens=False)["input_ids"] for t in read_texts(path)), vocab_size)
