"""Tokenizer loading, packing invariants, deterministic split and batch order, corpus sources."""

import json

import pytest
import torch

from lmdynamics.data.corpus import load_corpus
from lmdynamics.data.packing import StepBatchSampler, pack, split_documents, tokenize_stream
from lmdynamics.data.python_docs import corpus_hash
from lmdynamics.data.tokenizer import load_tokenizer

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Lists are mutable sequences, typically used to store collections of homogeneous items.",
    "A dictionary maps hashable values to arbitrary objects.",
    "x",
    "Tuples are immutable sequences, typically used to store collections of heterogeneous data.",
] * 7


def test_pythia_tokenizer_from_local_file(pythia_tokenizer_file):
    tok = load_tokenizer(str(pythia_tokenizer_file))
    assert len(tok) == 50277
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0 and tok.eos_token_id == 0
    assert tok.convert_tokens_to_ids("<|padding|>") == 1
    text = "def f(x):\n    return x ** 2  # squares"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_packing_invariants(pythia_tokenizer_file):
    tok = load_tokenizer(str(pythia_tokenizer_file))
    stream = tokenize_stream(DOCS, tok, eos_id=0)
    # every document appears intact, followed by one EOS, in order
    expected = []
    for d in DOCS:
        expected += tok(d, add_special_tokens=False)["input_ids"] + [0]
    assert stream.tolist() == expected
    assert int((stream == 0).sum()) == len(DOCS)
    for T in (7, 16, 33):
        blocks = pack(stream, T)
        assert blocks.dtype == torch.int64 and blocks.shape == (len(stream) // T, T)
        assert blocks.flatten().tolist() == expected[: blocks.numel()]
        assert len(expected) - blocks.numel() < T  # only an incomplete tail is dropped


def test_split_is_deterministic_disjoint_and_complete():
    docs = [f"document number {i}" for i in range(100)]
    train, val = split_documents(docs, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == sorted(docs) and not set(train) & set(val)
    assert split_documents(docs, 0.1, seed=3) == (train, val)
    assert split_documents(docs, 0.1, seed=4)[1] != val
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(docs, 0.0, seed=3)


def test_batch_order_is_a_function_of_seed_and_step():
    full = list(StepBatchSampler(50, 8, seed=5, max_steps=20))
    assert len(full) == 20
    per_pass = 50 // 8
    first_pass = [i for b in full[:per_pass] for i in b]
    assert len(set(first_pass)) == len(first_pass)  # no block repeats within a pass
    resumed = StepBatchSampler(50, 8, seed=5, max_steps=20, start_step=7)
    assert list(resumed) == full[7:]
    assert len(resumed) == 20  # the epoch keeps its length: Lightning counts the 7 done batches as fetched
    accumulated = list(StepBatchSampler(50, 4, seed=5, max_steps=5, accumulate=2, start_step=2))
    assert accumulated == list(StepBatchSampler(50, 4, seed=5, max_steps=5, accumulate=2))[4:]
    assert list(StepBatchSampler(50, 8, seed=6, max_steps=20)) != full
    with pytest.raises(ValueError, match="fewer than data.batch_size"):
        StepBatchSampler(3, 8, seed=5, max_steps=2)


def test_local_files_through_datasets(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in DOCS[:5]))
    corpus = load_corpus(str(tmp_path / "a.jsonl"), cache_dir=tmp_path / "cache")
    assert corpus.documents == DOCS[:5]
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, d in enumerate(DOCS[:3]):
        (txt / f"{i}.txt").write_text(d + "\nsecond line")
    corpus = load_corpus(str(txt), cache_dir=tmp_path / "cache")
    assert corpus.documents == [d + "\nsecond line" for d in DOCS[:3]]  # one document per file
    import pandas as pd

    pd.DataFrame({"body": DOCS[:4]}).to_parquet(tmp_path / "p.parquet")
    assert load_corpus(str(tmp_path / "p.parquet"), text_field="body", cache_dir=tmp_path / "c").documents == DOCS[:4]
    with pytest.raises(ValueError, match="no field 'text'"):
        load_corpus(str(tmp_path / "p.parquet"), cache_dir=tmp_path / "c")


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        load_corpus(str(tmp_path / "empty.txt"), cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="could not be loaded"):
        load_corpus("no-such-org/no-such-dataset", cache_dir=tmp_path / "c")


def test_bundled_corpus_is_deterministic(tmp_path):
    a = load_corpus("python-docs", cache_dir=tmp_path / "a")
    b = load_corpus("python-docs", cache_dir=tmp_path / "b")  # built again from scratch
    assert a.corpus_id == b.corpus_id and a.documents == b.documents
    assert a.corpus_id.endswith(corpus_hash(a.documents))
    size = sum(map(len, a.documents))
    assert 1_500_000 < size < 4_000_000  # pydoc topics + stdlib docstrings: ~2.4M characters on 3.11
    assert any(d.startswith("Topic ") for d in a.documents) and any(d.startswith("Module json") for d in a.documents)


def test_bpe_is_trained_once_and_cached(tmp_path):
    docs = [d * 3 for d in DOCS]
    tok = load_tokenizer("bpe:300", documents=docs, corpus_id="t", cache_dir=tmp_path)
    assert len(tok) <= 300 and tok.eos_token_id == 0 and tok.pad_token_id == 1
    assert tok.decode(tok("The quick brown fox")["input_ids"]) == "The quick brown fox"
    files = list((tmp_path / "tokenizers").glob("*.json"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    load_tokenizer("bpe:300", documents=docs, corpus_id="t", cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="bpe:<vocab size>"):
        load_tokenizer("bpe:lots", documents=docs)


def test_streaming_matches_in_memory_packing_and_resumes(tmp_path, pythia_tokenizer_file):
    from lmdynamics.data.datamodule import TextDataModule

    docs = [f"Document {i}: " + " ".join(DOCS[i % len(DOCS)] for _ in range(1 + i % 3)) for i in range(60)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    dm = TextDataModule(source=str(path), tokenizer=str(pythia_tokenizer_file), context_length=16, batch_size=3,
                        streaming=True, val_documents=5, val_blocks=None, cache_dir=str(tmp_path / "cache"))
    dm.prepare()
    tok = dm.tokenizer
    assert torch.equal(dm.val_all, pack(tokenize_stream(docs[:5], tok, 0), 16))
    expected = pack(tokenize_stream(docs[5:], tok, 0), 16)
    trainer = type("T", (), {"accumulate_grad_batches": 1, "max_steps": 6, "global_step": 0, "global_rank": 0, "world_size": 1})()
    dm.trainer = trainer
    batches = list(dm.train_dataloader())
    assert len(batches) == 6 and all(torch.equal(b, expected[3 * i:3 * i + 3]) for i, b in enumerate(batches))
    trainer.global_step = 4  # resumed at step 4
    assert [b.tolist() for b in dm.train_dataloader()] == [b.tolist() for b in batches[4:]]
    trainer.global_step, trainer.world_size, trainer.global_rank = 0, 3, 1  # rank 1 of 3: its slice of each global batch
    first = next(iter(dm.train_dataloader()))
    assert torch.equal(first, expected[0:9][1::3])
    with pytest.raises(ValueError, match="bpe"):
        TextDataModule(source=str(path), tokenizer="bpe:300", streaming=True).prepare()
