"""The evaluation blocks and token metadata of ``lmdynamics.trajectories.tokens`` against direct constructions
written here token by token (a loop over the stream, not the module's array arithmetic), for any documents and
block shapes; token classes on the real Pythia tokenizer, every class and the boundary rule; corpus counts and
their decade buckets at every decade edge."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from lmdynamics.trajectories.tokens import (
    TOKEN_CLASSES,
    EvaluationTextTooShort,
    evaluation_blocks,
    frequency_buckets,
    packed_token_table,
    token_classes,
    token_counts,
)

documents = st.lists(st.lists(st.integers(1, 50), max_size=12), min_size=1, max_size=12)


def direct_packing(docs, num_blocks, block_tokens, eos_id):
    """(ids, document of each token) of the first num_blocks * block_tokens tokens, one token at a time."""
    ids, owner = [], []
    for d, doc in enumerate(docs):
        for token in list(doc) + ([] if eos_id is None else [eos_id]):
            ids.append(token)
            owner.append(d)
    need = num_blocks * block_tokens
    return ids[:need], owner[:need], len(ids)


@settings(max_examples=80, deadline=None)
@given(docs=documents, num_blocks=st.integers(1, 4), block_tokens=st.integers(2, 9), eos=st.sampled_from([0, None]))
def test_evaluation_blocks_are_the_packed_stream_cut_into_blocks_and_score_positions_one_on(docs, num_blocks,
                                                                                          block_tokens, eos):
    ids, owner, available = direct_packing(docs, num_blocks, block_tokens, eos)
    need = num_blocks * block_tokens
    if available < need:
        with pytest.raises(EvaluationTextTooShort, match=rf"has {available} tokens, fewer than the {num_blocks} x "
                                                         rf"{block_tokens} = {need} requested"):
            evaluation_blocks(docs, num_blocks, block_tokens, eos)
        return
    blocks, table = evaluation_blocks(docs, num_blocks, block_tokens, eos)
    assert blocks.dtype == torch.int64 and tuple(blocks.shape) == (num_blocks, block_tokens)
    assert blocks.reshape(-1).tolist() == ids
    scored = [(b, p) for b in range(num_blocks) for p in range(1, block_tokens)]  # the first token has no context
    assert table.ids.reshape(-1).tolist() == [ids[b * block_tokens + p] for b, p in scored]
    assert table.position.reshape(-1).tolist() == [p for _, p in scored]
    assert table.block.reshape(-1).tolist() == [b for b, _ in scored]
    assert table.document.reshape(-1).tolist() == [owner[b * block_tokens + p] for b, p in scored]


def test_evaluation_blocks_read_only_the_documents_they_need_and_refuse_bad_shapes():
    def endless():
        d = 0
        while True:
            d += 1
            yield [d] * 3

    blocks, table = evaluation_blocks(endless(), num_blocks=2, block_tokens=5, eos_id=None)
    assert blocks.tolist() == [[1, 1, 1, 2, 2], [2, 3, 3, 3, 4]]
    for num_blocks, block_tokens in ((0, 4), (2, 1), (-1, 4)):
        with pytest.raises(ValueError, match=rf"need num_blocks >= 1 and block_tokens >= 2, got {num_blocks} and "
                                             rf"{block_tokens}"):
            evaluation_blocks([[1, 2, 3]] * 10, num_blocks, block_tokens, 0)


@settings(max_examples=80, deadline=None)
@given(stream=st.lists(st.integers(0, 4), min_size=2, max_size=60), block_tokens=st.integers(2, 6))
def test_packed_token_table_counts_documents_along_the_whole_stream(stream, block_tokens):
    """Already packed blocks (a run's validation blocks, eos id 0): the document of a token is the number of
    end-of-text ids before it in the stream, and an end-of-text belongs to the document it ends."""
    n = len(stream) // block_tokens
    if n == 0:
        return
    stream = stream[: n * block_tokens]
    document, seen = [], 0
    for token in stream:
        document.append(seen)
        seen += token == 0
    table = packed_token_table(torch.tensor(stream, dtype=torch.int64).view(n, block_tokens), eos_id=0)
    scored = [(b, p) for b in range(n) for p in range(1, block_tokens)]
    assert table.ids.reshape(-1).tolist() == [stream[b * block_tokens + p] for b, p in scored]
    assert table.position.reshape(-1).tolist() == [p for _, p in scored]
    assert table.block.reshape(-1).tolist() == [b for b, _ in scored]
    assert table.document.reshape(-1).tolist() == [document[b * block_tokens + p] for b, p in scored]


def test_packed_and_evaluation_tables_agree_on_the_same_stream():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    blocks, table = evaluation_blocks(docs, num_blocks=3, block_tokens=4, eos_id=0)
    packed = packed_token_table(blocks, eos_id=0)
    for field in ("ids", "position", "document", "block"):
        np.testing.assert_array_equal(np.asarray(getattr(packed, field)), np.asarray(getattr(table, field)), field)


@pytest.fixture(scope="module")
def pythia(pythia_tokenizer_file):
    return PreTrainedTokenizerFast(tokenizer_file=str(pythia_tokenizer_file))


# one token of the Pythia vocabulary (its byte-level string) per class, and what each is
ONE_TOKEN_EACH = {
    "Ġthe": "word-initial", "ĠÃ©": "word-initial", "Ãª": "continuation", "the": "continuation", "ing": "continuation",
    "42": "digit", "Ġ42": "digit", ",": "punctuation", "Ġ(": "punctuation", "$": "punctuation", "+": "punctuation",
    "Ċ": "whitespace", "ĠĠ": "whitespace", "Ġ": "whitespace", "<|endoftext|>": "special", "<|padding|>": "special",
    "'s": "other", "'ll": "other",
}


def test_every_token_class_on_single_pythia_tokens(pythia):
    vocab = pythia.get_vocab()
    ids = [vocab[piece] for piece in ONE_TOKEN_EACH]
    got = dict(zip(ONE_TOKEN_EACH, token_classes(pythia, ids)))
    assert got == ONE_TOKEN_EACH
    assert set(ONE_TOKEN_EACH.values()) == set(TOKEN_CLASSES)
    # the same ids in another order and repeated: each keeps its class
    again = token_classes(pythia, np.array(ids[::-1] * 2).reshape(2, -1))
    assert list(again) == [ONE_TOKEN_EACH[p] for p in list(ONE_TOKEN_EACH)[::-1]] * 2


def test_a_letters_token_after_whitespace_or_a_special_token_starts_a_word(pythia):
    vocab = pythia.get_vocab()
    the, word, newline, space_the, eos = vocab["the"], vocab["Ġthe"], vocab["Ċ"], vocab["Ġdog"], vocab["<|endoftext|>"]
    ids = [the, the, the, the, the, word, vocab["42"]]
    previous = [newline, eos, space_the, vocab["ĠĠ"], vocab[","], newline, newline]
    assert list(token_classes(pythia, ids, previous)) == ["word-initial", "word-initial", "continuation",
                                                           "word-initial", "continuation", "word-initial", "digit"]
    assert list(token_classes(pythia, ids)) == ["continuation"] * 5 + ["word-initial", "digit"]


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 9), max_size=30), max_size=8), vocab=st.integers(1, 12))
def test_token_counts_count_every_id_below_the_vocabulary_size(docs, vocab):
    counted = Counter(token for doc in docs for token in doc)
    got = token_counts(iter(docs), vocab)
    assert got.dtype == np.int64 and got.shape == (vocab,)
    assert got.tolist() == [counted[i] for i in range(vocab)]


def test_frequency_buckets_are_decades_at_every_edge():
    edges = [0, 1, 9, 10, 11, 99, 100, 999, 1000, 9999, 10_000, 10**6 - 1, 10**6, 10**12]
    counts = np.array(edges, dtype=np.int64)
    ids = np.arange(len(edges)).reshape(2, -1)  # any shape of ids
    want = []
    for c in edges:
        if c == 0:
            want.append("0")
        else:
            low = 10 ** (len(str(c)) - 1)  # the decade from the count's digits, not from a logarithm
            want.append(f"{low}-{10 * low - 1}")
    assert list(frequency_buckets(counts, ids)) == want
    assert len(set(want)) == 9


class _TableTokenizer:
    """A tokenizer reduced to what ``token_classes`` reads: ``decode`` of one id and the special ids (as a
    ``tokenizers``-style object without ``added_tokens_decoder``)."""

    def __init__(self, strings: dict[int, str], special: list[int]):
        self.strings, self.all_special_ids = strings, special

    def decode(self, ids):
        return "".join(self.strings[i] for i in ids)


def test_classes_from_any_tokenizer_that_decodes_including_an_empty_string_and_specials_by_id():
    tok = _TableTokenizer({0: "", 1: " ", 2: "<s>", 3: "cat", 4: "\t7", 5: " ¿?", 6: "é2"}, special=[2])
    assert list(token_classes(tok, [0, 1, 2, 3, 4, 5, 6])) == ["whitespace", "whitespace", "special", "continuation",
                                                               "digit", "punctuation", "other"]
    # after an empty string (not whitespace-ending) a word goes on; after the special id it starts
    assert list(token_classes(tok, [3, 3, 3], previous=[0, 2, 1])) == ["continuation", "word-initial", "word-initial"]


def test_evaluation_blocks_stop_reading_when_the_documents_fill_the_blocks_exactly():
    """Two documents of 3 tokens fill 2 blocks of 3: the third document is never read."""
    read = []

    def documents():
        for d in range(5):
            read.append(d)
            yield [d + 1] * 3

    blocks, _ = evaluation_blocks(documents(), num_blocks=2, block_tokens=3, eos_id=None)
    assert blocks.tolist() == [[1, 1, 1], [2, 2, 2]] and read == [0, 1]


@pytest.mark.parametrize("dtype", [np.int32, np.uint16])
def test_evaluation_blocks_are_int64_whatever_integer_type_the_documents_come_in(dtype):
    docs = [np.array([5, 6, 7], dtype=dtype), np.array([8, 9, 10], dtype=dtype)]
    blocks, _ = evaluation_blocks(docs, num_blocks=2, block_tokens=3, eos_id=None)
    assert blocks.dtype == torch.int64 and blocks.tolist() == [[5, 6, 7], [8, 9, 10]]


def test_special_ids_are_the_declared_special_ids_and_the_added_tokens_together():
    """A tokenizer may declare special ids (all_special_ids), added tokens (added_tokens_decoder), both or
    neither: every id it names either way is special, and a tokenizer naming none has no special token."""
    strings = {0: "<a>", 1: "<b>", 2: "cat"}
    both = _TableTokenizer(strings, special=[0])
    both.added_tokens_decoder = {1: "<b>"}
    assert list(token_classes(both, [0, 1, 2])) == ["special", "special", "continuation"]
    added_only = SimpleNamespace(decode=both.decode, added_tokens_decoder={1: "<b>"})
    assert list(token_classes(added_only, [0, 1, 2])) == ["other", "special", "continuation"]
    bare = SimpleNamespace(decode=both.decode)
    assert list(token_classes(bare, [0, 1, 2])) == ["other", "other", "continuation"]


def test_only_the_last_character_of_the_previous_token_decides_a_word_start():
    """'end.\\n' ends in whitespace (a word after it starts a word); 'end. x' does not."""
    tok = _TableTokenizer({0: "cat", 1: "end.\n", 2: "end. x", 3: " \n"}, special=[])
    assert list(token_classes(tok, [0, 0, 0], previous=[1, 2, 3])) == ["word-initial", "continuation",
                                                                      "word-initial"]


def test_ids_and_previous_ids_in_the_shape_of_blocks_give_one_class_per_token():
    """ids and the id before each one may come as (blocks, positions) arrays: the classes are those of the
    flattened tokens, in order."""
    tok = _TableTokenizer({0: "cat", 1: " ", 2: ",", 3: " dog"}, special=[])
    ids = np.array([[0, 0, 3], [0, 2, 0]])
    previous = np.array([[1, 0, 0], [2, 0, 1]])
    flat = token_classes(tok, ids.reshape(-1), previous.reshape(-1))
    assert list(flat) == ["word-initial", "continuation", "word-initial", "continuation", "punctuation",
                          "word-initial"]
    assert list(token_classes(tok, ids, previous)) == list(flat)
