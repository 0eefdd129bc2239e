"""Corpora as lists of documents: the bundled default, local text/jsonl/parquet files, or a hub dataset.

All go through Hugging Face ``datasets`` except the bundled corpus, which is built from the running Python.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

BUNDLED = "python-docs"
_LOCAL_BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class Corpus:
    documents: list[str]
    corpus_id: str  # identifies the content (hash or name + options); keys tokenizer and token caches
    description: str


def _local_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*") if p.suffix in _LOCAL_BUILDERS) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"data.source {path} holds no .txt/.jsonl/.json/.parquet files")
    suffixes = {p.suffix for p in files}
    if len({_LOCAL_BUILDERS.get(s) for s in suffixes}) != 1 or None in {_LOCAL_BUILDERS.get(s) for s in suffixes}:
        raise ValueError(f"data.source {path}: expected files of one kind (.txt, .jsonl/.json or .parquet), found {sorted(suffixes)}")
    return files


def _content_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_corpus(
    source: str,
    *,
    text_field: str = "text",
    hub_config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    max_documents: int | None = None,
    cache_dir: str | os.PathLike = ".cache",
) -> Corpus:
    """Load ``source``: ``python-docs``, a local file or directory, or a hub dataset name."""
    if source == BUNDLED:
        from .python_docs import load_python_docs

        docs, digest = load_python_docs(Path(cache_dir) / "corpora")
        return _finish(Corpus(docs, f"python-docs-{digest}", f"Python's bundled documentation (sha256 {digest})"), max_documents, source)

    ds, corpus_id, description = open_rows(source, hub_config=hub_config, split=split, streaming=streaming, cache_dir=cache_dir)
    docs = []
    for row in ds:
        if text_field not in row:
            raise ValueError(f"data.source {source}: rows have no field {text_field!r} (fields: {sorted(row)}); set data.text_field")
        text = row[text_field]
        if text and text.strip():
            docs.append(text)
        if max_documents is not None and len(docs) >= max_documents:
            break
    return _finish(Corpus(docs, corpus_id, description), max_documents, source)


def open_rows(source: str, *, hub_config: str | None = None, split: str = "train", streaming: bool = False,
              cache_dir: str | os.PathLike = ".cache"):
    """A local file/directory or hub dataset as ``datasets`` rows (an IterableDataset when streaming),
    with an id for its content and a description."""
    import datasets

    path = Path(source).expanduser()
    looks_local = path.exists() or path.suffix in _LOCAL_BUILDERS or source.startswith((".", "/", "~"))
    if looks_local:
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist; give an existing .txt/.jsonl/.parquet file or directory, a hub dataset name, or {BUNDLED}")
        files = _local_files(path)
        if all(f.stat().st_size == 0 or (f.stat().st_size < 1 << 20 and not f.read_bytes().strip()) for f in files):
            raise ValueError(f"data.source {source} is empty: it holds no non-blank documents")
        builder = _LOCAL_BUILDERS[files[0].suffix]
        kwargs = {"sample_by": "paragraph"} if builder == "text" else {}  # .txt: documents end at a blank line
        if not streaming:
            kwargs["cache_dir"] = str(Path(cache_dir) / "datasets")
        try:
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=streaming, **kwargs)
        except Exception as err:  # noqa: BLE001 - malformed JSON/Parquet: one line naming the file
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"data.source {source} could not be read as {builder}: {first}") from None
        return ds, f"files-{_content_hash(files)}", f"{len(files)} local {builder} file(s) under {path}"
    try:
        ds = datasets.load_dataset(source, hub_config, split=split, streaming=streaming)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"hub dataset {source!r} (config {hub_config}, split {split}) could not be loaded: {first}") from None
    return ds, f"hub-{source}-{hub_config}-{split}", f"hub dataset {source} ({hub_config or 'default'} / {split})"


def _finish(corpus: Corpus, max_documents: int | None, source: str) -> Corpus:
    if max_documents is not None:
        corpus.documents = corpus.documents[:max_documents]
        corpus.corpus_id += f"-first{max_documents}"
    if not any(d.strip() for d in corpus.documents):
        raise ValueError(f"data.source {source} is empty: it holds no non-blank documents")
    return corpus
