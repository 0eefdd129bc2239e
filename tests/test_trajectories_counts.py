"""Corpus frequencies of the trajectory report from the bundled corpus and from a run's own training split:
the counts equal a count made here, directly, over the same token stream (documents split as training splits
them, tokenised with the tokenizer itself, end-of-text after each, the incomplete last block dropped)."""

import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from tokenizers import Tokenizer

from lmdynamics.data.corpus import load_corpus
from lmdynamics.data.datamodule import default_cache_dir
from lmdynamics.data.packing import split_documents
from lmdynamics.probes.sources import load_tokenizer
from lmdynamics.commands.trajectories import main
from lmdynamics.trajectories.counts import corpus_counts
from lmdynamics.trajectories.storage import TrajectoryStore
from lmdynamics.trajectories.tokens import frequency_buckets
from tests.helpers.trajectories import run_directory, short_documents, two_synthetic_runs

EOS = 0  # <|endoftext|> of the BPE trained by lmdynamics.data.tokenizer


def direct_counts(documents, tokenizer_file, context_length, vocab):
    tok = Tokenizer.from_file(str(tokenizer_file))
    stream = []
    for doc in documents:
        stream += tok.encode(doc, add_special_tokens=False).ids + [EOS]
    stream = stream[: len(stream) // context_length * context_length]
    return np.bincount(np.asarray(stream), minlength=vocab)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, local_text):
    """Two runs; "small" gets the config.yaml and run.json corpus id a training run writes; trajectories recorded."""
    root = tmp_path_factory.mktemp("counts")
    small, large = two_synthetic_runs(root, local_text)
    data = {"source": str(local_text), "tokenizer": "bpe:300", "context_length": 33, "val_fraction": 0.1, "seed": 5,
            "cache_dir": str(root / "cache")}
    (small / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    run = json.loads((small / "run.json").read_text())
    run["corpus_id"] = load_corpus(str(local_text), cache_dir=root / "cache").corpus_id
    (small / "run.json").write_text(json.dumps(run))
    store = root / "store"
    assert main(["record", "--source", str(small), "--source", str(large), "--text", str(local_text), "--blocks", "3",
                 "--block-tokens", "33", "--out", str(store)]) == 0
    return root, small, store, local_text


def _frequency_groups(report_dir):
    shares = pd.read_csv(report_dir / "shares.csv")
    rows = shares[(shares.breakdown == "frequency") & (shares.model == "small") & np.isclose(shares.start_fraction, 0.2)]
    return rows.groupby("group")["count"].sum().to_dict()


def test_a_run_directory_counts_its_own_training_split(recorded, tmp_path):
    root, small, store, text = recorded
    tokfile = small / "checkpoints" / "step00000400" / "tokenizer.json"
    docs = [d for d in text.read_text().split("\n\n") if d.strip()]
    train, _ = split_documents(docs, 0.1, 5)
    want = direct_counts(train, tokfile, 33, 300)
    got = corpus_counts(str(small), load_tokenizer(tokfile), tokfile, 300, tokfile)
    np.testing.assert_array_equal(got, want)
    assert want[EOS] == len(train) or want[EOS] == len(train) - 1  # one separator per document (the tail may lose one)
    out = tmp_path / "report"
    assert main(["report", "--store", str(store), "--out", str(out), "--corpus", str(small), "--start-fractions", "0.2"]) == 0
    ids = TrajectoryStore(store / "small").read().token_table.ids
    assert _frequency_groups(out) == dict(Counter(frequency_buckets(want, ids)))


def test_the_bundled_corpus_counts_the_default_training_split(recorded, tmp_path):
    root, small, store, _ = recorded
    tokfile = small / "checkpoints" / "step00000400" / "tokenizer.json"
    docs = load_corpus("python-docs", cache_dir=default_cache_dir()).documents
    train, _ = split_documents(docs, 0.05, 1234)  # the defaults of data.val_fraction and data.seed
    want = direct_counts(train, tokfile, 128, 300)  # data.context_length 128
    out = tmp_path / "report"
    assert main(["report", "--store", str(store), "--out", str(out), "--corpus", "python-docs", "--start-fractions", "0.2"]) == 0
    ids = TrajectoryStore(store / "small").read().token_table.ids
    assert _frequency_groups(out) == dict(Counter(frequency_buckets(want, ids)))
    np.testing.assert_array_equal(corpus_counts("python-docs", load_tokenizer(tokfile), tokfile, 300), want)


def test_a_run_whose_corpus_changed_is_refused_in_one_line(recorded, tmp_path, capsys):
    root, small, store, _ = recorded
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "config.yaml").write_text((small / "config.yaml").read_text())
    (changed / "run.json").write_text(json.dumps({**json.loads((small / "run.json").read_text()), "corpus_id": "files-0"}))
    out = tmp_path / "report"
    assert main(["report", "--store", str(store), "--out", str(out), "--corpus", str(changed)]) == 2
    err = capsys.readouterr().err.strip()
    assert "changed since training" in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_counts_file_as_npy_or_json_gives_one_count_per_id(tmp_path):
    """``--counts``: a .npy of counts is read as is; a .json {id: count} fills the ids it names, every other id
    of the vocabulary counts zero; anything else is refused naming the two formats."""
    from lmdynamics.trajectories.counts import counts_file
    counts = np.array([0, 7, 0, 3, 12, 0], dtype=np.int32)
    np.save(tmp_path / "c.npy", counts)
    (tmp_path / "c.json").write_text(json.dumps({"1": 7, "3": 3, "4": 12.0}))
    from_npy, from_json = counts_file(tmp_path / "c.npy", 6), counts_file(str(tmp_path / "c.json"), 6)
    assert from_npy.dtype == np.int64 and from_json.dtype == np.int64
    np.testing.assert_array_equal(from_npy, counts)
    np.testing.assert_array_equal(from_json, counts)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        counts_file(tmp_path / "missing.npy", 6)
    (tmp_path / "c.txt").write_text("1 7\n")
    with pytest.raises(ValueError, match=r"give a \.npy .* or a \.json"):
        counts_file(tmp_path / "c.txt", 6)


# Fast tests of ``corpus_counts`` (the ones above record trajectories and build the bundled corpus): a text file
# and a run directory whose data section names a tokenizer file, counted against a direct count made here with the
# ``tokenizers`` library, and every refusal.

PYTHIA_VOCAB = 50304  # the Pythia models' padded vocabulary: more ids than the tokenizer's 50,277


def test_a_text_file_counts_every_token_of_every_document_without_separators(tmp_path, pythia_tokenizer_file):
    docs = short_documents()
    tok = Tokenizer.from_file(str(pythia_tokenizer_file))
    want = np.bincount(np.concatenate([tok.encode(d, add_special_tokens=False).ids for d in docs]),
                       minlength=PYTHIA_VOCAB)
    (tmp_path / "c.txt").write_text("\n\n".join(docs))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    trajectories_tokenizer = load_tokenizer(pythia_tokenizer_file)
    for name in ("c.txt", "c.jsonl"):
        got = corpus_counts(str(tmp_path / name), trajectories_tokenizer, pythia_tokenizer_file, PYTHIA_VOCAB)
        assert got.dtype == np.int64 and got.shape == (PYTHIA_VOCAB,)
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert want[0] == 0  # a file's documents are counted without end-of-text separators
    templated = json.loads(pythia_tokenizer_file.read_text())  # a tokenizer that starts every text with id 0
    templated["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>",
                                   "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
                                   "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                                                        "tokens": ["<|endoftext|>"]}}}
    (tmp_path / "templated.json").write_text(json.dumps(templated))
    with_bos = load_tokenizer(tmp_path / "templated.json")
    assert with_bos("alpha")["input_ids"][0] == 0  # the template is on by default
    np.testing.assert_array_equal(corpus_counts(str(tmp_path / "c.txt"), with_bos, tmp_path / "templated.json",
                                                PYTHIA_VOCAB), want)  # counted without the tokens a template adds
    with pytest.raises(FileNotFoundError, match=r"--corpus .*missing\.txt: no such file or run directory; give a text "
                                                r"file, a run directory or python-docs"):
        corpus_counts(str(tmp_path / "missing.txt"), trajectories_tokenizer, pythia_tokenizer_file, PYTHIA_VOCAB)


def test_a_run_directory_counts_its_training_split_with_the_tokenizer_its_config_names(tmp_path, pythia_tokenizer_file):
    """A run whose ``data.tokenizer`` is a tokenizer file (no checkpoint tokenizer given): its training split
    (``split_documents`` with its val_fraction and seed), end-of-text after each document, whole blocks of its
    context length; the same run counted with another tokenizer is refused in one line."""
    docs = short_documents(n=20, seed=8)
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(docs))
    data = {"source": str(text), "tokenizer": str(pythia_tokenizer_file), "context_length": 16, "val_fraction": 0.25,
            "seed": 3, "cache_dir": str(tmp_path / "cache")}
    run = run_directory(tmp_path / "run", data, load_corpus(str(text), cache_dir=tmp_path / "cache").corpus_id)
    train, _ = split_documents([d for d in text.read_text().split("\n\n") if d.strip()], 0.25, 3)
    want = direct_counts(train, pythia_tokenizer_file, 16, PYTHIA_VOCAB)
    assert 0 < want.sum() < sum(len(d.split()) for d in docs) * 4 and want[EOS] > 0
    got = corpus_counts(str(run), load_tokenizer(pythia_tokenizer_file), pythia_tokenizer_file, PYTHIA_VOCAB)
    np.testing.assert_array_equal(got, want)

    moved = dict(data, tokenizer=str(tmp_path / "gone" / "tokenizer.json"))  # the checkpoint's copy counts instead
    elsewhere = run_directory(tmp_path / "moved", moved, load_corpus(str(text), cache_dir=tmp_path / "cache").corpus_id)
    np.testing.assert_array_equal(corpus_counts(str(elsewhere), load_tokenizer(pythia_tokenizer_file),
                                                pythia_tokenizer_file, PYTHIA_VOCAB, pythia_tokenizer_file), want)

    other = json.loads(pythia_tokenizer_file.read_text())
    other["added_tokens"].append({**other["added_tokens"][-1], "id": 50277, "content": "<|another|>"})
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"^--corpus .*run: the tokenizer of run .*run differs from the trajectories' "
                                         r"tokenizer; count a corpus of the same model family or give --counts$"):
        corpus_counts(str(run), load_tokenizer(tmp_path / "other.json"), tmp_path / "other.json", PYTHIA_VOCAB)
    text.write_text("\n\n".join(docs[1:]))  # the corpus changed since training: its split cannot be rebuilt
    with pytest.raises(ValueError, match=rf"^--corpus {re.escape(str(run))}: the corpus now reads as .*, not .* as in "
                                         rf"run.json"):
        corpus_counts(str(run), load_tokenizer(pythia_tokenizer_file), pythia_tokenizer_file, PYTHIA_VOCAB)


def test_the_bundled_corpus_counts_its_default_training_split_with_the_tokenizer_given(tmp_path, pythia_tokenizer_file):
    """python-docs, split as a default run splits it (data.val_fraction 0.05, data.seed 1234, context 128), with the
    trajectories' tokenizer file; another trajectories tokenizer is refused naming the bundled corpus."""
    docs = load_corpus("python-docs", cache_dir=default_cache_dir()).documents
    train, _ = split_documents(docs, 0.05, 1234)
    want = direct_counts(train, pythia_tokenizer_file, 128, PYTHIA_VOCAB)
    tok = load_tokenizer(pythia_tokenizer_file)
    np.testing.assert_array_equal(corpus_counts("python-docs", tok, pythia_tokenizer_file, PYTHIA_VOCAB), want)
    other = json.loads(pythia_tokenizer_file.read_text())
    other["added_tokens"].append({**other["added_tokens"][-1], "id": 50277, "content": "<|another|>"})
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"^--corpus python-docs: the tokenizer of the bundled corpus differs from the "
                                         r"trajectories' tokenizer; count a corpus of the same model family or give "
                                         r"--counts$"):
        corpus_counts("python-docs", load_tokenizer(tmp_path / "other.json"), pythia_tokenizer_file, PYTHIA_VOCAB)


@pytest.mark.parametrize("data, kind", [({"source": "synthetic"}, "a synthetic language"),
                                        ({"source": "some/hub-corpus", "streaming": True}, "a streamed corpus")])
def test_a_run_without_a_fixed_training_split_is_refused_naming_what_it_trained_on(tmp_path, pythia_tokenizer_file,
                                                                                   data, kind):
    run = run_directory(tmp_path / "run", data, "")
    with pytest.raises(ValueError, match=rf"^--corpus {run}: the run trained on {kind}, which has no fixed training "
                                         rf"split to count; give --counts$"):
        corpus_counts(str(run), load_tokenizer(pythia_tokenizer_file), pythia_tokenizer_file, PYTHIA_VOCAB)
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    with pytest.raises(FileNotFoundError, match="is not a training run directory"):
        corpus_counts(str(not_a_run), load_tokenizer(pythia_tokenizer_file), pythia_tokenizer_file, PYTHIA_VOCAB)
