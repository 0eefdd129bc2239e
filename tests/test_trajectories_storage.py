"""Per-token losses (against a float64 reference), the float16 store (round trip, resume after a kill), token metadata."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import GPTNeoXForCausalLM, PreTrainedTokenizerFast

from lmdynamics.checkpoints.synthetic import tiny_config
from lmdynamics.trajectories.record import corpus_perplexity, token_losses
from lmdynamics.trajectories.storage import TokenTable, TrajectoryStore
from lmdynamics.trajectories.tokens import (
    EvaluationTextTooShort,
    evaluation_blocks,
    frequency_buckets,
    token_classes,
    token_counts,
)


def _table(n):
    return TokenTable(np.arange(n) % 7, np.arange(n) % 5 + 1, np.arange(n) // 9, np.arange(n) // 5)


def test_token_losses_match_a_float64_reference_one_sequence_at_a_time():
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(tiny_config()).train()
    blocks = torch.randint(0, 128, (5, 12))
    got = token_losses(model, blocks, batch_size=2)
    assert got.shape == (5, 11) and got.dtype == torch.float32 and model.training  # mode restored
    ref = model.double().eval()
    for n in range(5):
        for t in range(1, 12):  # the prefix alone: no look-ahead through the batch or later tokens
            logp = torch.log_softmax(ref(input_ids=blocks[n:n + 1, :t]).logits[0, -1], -1)
            assert got[n, t - 1].item() == pytest.approx(-logp[blocks[n, t]].item(), abs=2e-5)
    assert corpus_perplexity(got) == pytest.approx(float(np.exp(got.double().mean())), rel=1e-12)
    assert corpus_perplexity([1.0, 3.0]) == pytest.approx(np.exp(2.0))  # exp of the mean, not mean of exps


def test_store_round_trips_within_float16_and_sorts_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    n = 1000
    store = TrajectoryStore.create(tmp_path / "m", _table(n), {"model": "m", "parameters": 123})
    rows = {s: rng.uniform(0, 12, n).astype(np.float32) for s in (4, 0, 2, 1000)}
    for s, row in rows.items():
        assert store.append(s, row, val_ppl=10.0 + s, tokens=s * 64)
    traj = TrajectoryStore(tmp_path / "m").read()
    assert list(traj.steps) == [0, 2, 4, 1000] and list(traj.tokens) == [0, 128, 256, 64000]
    assert list(traj.val_ppl) == [10.0, 12.0, 14.0, 1010.0]
    assert traj.losses.shape == (n, 4) and traj.losses.dtype == np.float32
    for j, s in enumerate(traj.steps):
        np.testing.assert_array_equal(traj.losses[:, j], rows[s].astype(np.float16).astype(np.float32))
        assert np.max(np.abs(traj.losses[:, j] - rows[s]) / rows[s]) <= 2.0 ** -11
    np.testing.assert_array_equal(traj.token_table.ids, _table(n).ids)
    assert traj.meta["parameters"] == 123 and traj.model == "m"
    assert os.path.getsize(tmp_path / "m" / "losses.f16") == 4 * n * 2  # two bytes a value
    assert not store.append(2, rows[2], 1.0, 0)  # already there: refused, nothing written
    assert len(TrajectoryStore(tmp_path / "m").read().steps) == 4
    with pytest.raises(ValueError, match="other evaluation tokens"):
        TrajectoryStore.create(tmp_path / "m", _table(n + 1), {})
    with pytest.raises(ValueError, match="losses for a store"):
        store.append(7, np.zeros(n - 1), 1.0, 0)


@pytest.mark.slow
def test_a_killed_append_leaves_no_partial_or_duplicated_checkpoint(tmp_path):
    """A writer killed after writing its row but before committing the manifest: the row is invisible, and the
    resumed recorder appends that step exactly once."""
    n = 500
    TrajectoryStore.create(tmp_path / "m", _table(n), {"model": "m"}).append(0, np.full(n, 5.0), 100.0, 0)
    script = textwrap.dedent(f"""
        import os, numpy as np
        import lmdynamics.trajectories.storage as s
        def die(*a, **k):
            os._exit(9)  # killed between the data write and the manifest
        s.write_json_atomic = die
        s.TrajectoryStore({str(tmp_path / 'm')!r}).append(1, np.full({n}, 4.0), 50.0, 10)
    """)
    res = subprocess.run([sys.executable, "-c", script])
    assert res.returncode == 9
    assert os.path.getsize(tmp_path / "m" / "losses.f16") == 2 * n * 2  # the orphan row is on disk ...
    store = TrajectoryStore(tmp_path / "m")
    assert store.steps == [0] and store.read().losses.shape == (n, 1)  # ... but not in view
    assert store.append(1, np.full(n, 3.0), 40.0, 10) and not store.append(1, np.full(n, 3.0), 40.0, 10)
    traj = TrajectoryStore(tmp_path / "m").read()
    assert list(traj.steps) == [0, 1] and np.all(traj.losses[:, 1] == 3.0)
    assert os.path.getsize(tmp_path / "m" / "losses.f16") == 2 * n * 2


def test_evaluation_blocks_pack_documents_and_refuse_short_text():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    blocks, table = evaluation_blocks(docs, num_blocks=2, block_tokens=4, eos_id=0)
    assert blocks.tolist() == [[5, 6, 7, 0], [8, 9, 0, 10]]
    assert table.ids.tolist() == [6, 7, 0, 9, 0, 10]  # the scored tokens: positions 1..3 of each block
    assert table.position.tolist() == [1, 2, 3, 1, 2, 3]
    assert table.document.tolist() == [0, 0, 0, 1, 1, 2] and table.block.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(EvaluationTextTooShort, match="fewer than the 4 x 4 = 16 requested"):
        evaluation_blocks(docs, num_blocks=4, block_tokens=4, eos_id=0)  # 12 tokens with separators


def test_token_classes_from_the_pythia_tokenizer(pythia_tokenizer_file):
    tok = PreTrainedTokenizerFast(tokenizer_file=str(pythia_tokenizer_file))
    ids = tok("The cat's 2023 sat,\n  unbelievably!")["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    got = dict(zip(pieces, token_classes(tok, ids)))
    assert got["The"] == "continuation"  # no leading space: starts the text but not after a space
    assert got[" cat"] == "word-initial" and got["'s"] == "other"
    assert got[","] == "punctuation" and got["!"] == "punctuation"
    assert any(got[p] == "digit" for p in pieces if p.strip().isdigit())
    assert any(got[p] == "whitespace" for p in pieces if p.isspace())
    assert any(got[p] == "continuation" for p in pieces if p.isalpha() and p not in ("The",))  # "unbeliev|ably"
    assert token_classes(tok, [0])[0] == "special"


def test_counts_and_frequency_buckets():
    counts = token_counts([[1, 1, 2], [2, 2, 3]] + [[4] * 150], vocab_size=6)
    assert counts.tolist() == [0, 2, 3, 1, 150, 0]
    assert list(frequency_buckets(counts, [0, 1, 3, 4])) == ["0", "1-9", "1-9", "100-999"]


def test_a_word_after_a_newline_or_a_document_start_is_word_initial(pythia_tokenizer_file):
    tok = PreTrainedTokenizerFast(tokenizer_file=str(pythia_tokenizer_file))
    ids = tok("cat\nThe dog")["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[:3] == ["cat", "\n", "The"]
    prev = [0] + ids[:-1]  # the first token follows <|endoftext|>
    assert list(token_classes(tok, ids)[:3]) == ["continuation", "whitespace", "continuation"]
    assert list(token_classes(tok, ids, prev)[:3]) == ["word-initial", "whitespace", "word-initial"]
    assert token_classes(tok, ids, prev)[-1] == "word-initial"  # " dog": by its own leading space


def test_previous_ids_come_from_the_kept_blocks(tmp_path):
    blocks, table = evaluation_blocks([[5, 6, 7], [8, 9], [10, 11, 12, 13]], num_blocks=2, block_tokens=4, eos_id=0)
    store = TrajectoryStore.create(tmp_path / "m", table, {}, blocks.numpy())
    assert store.previous_ids().tolist() == [5, 6, 7, 8, 9, 0]
    assert TrajectoryStore.create(tmp_path / "n", table, {}).previous_ids() is None


def test_a_token_tables_fingerprint_is_of_its_values_whatever_integer_type_they_came_in():
    """The fingerprint (first 16 hex digits of sha256 over the int32 ids, positions, documents and blocks, the form
    stores were written with) is the same for int64, int32 or list input, so a recording resumes on its own tokens."""
    import hashlib

    n = 50
    as_int64 = _table(n)
    as_int32 = TokenTable(*(np.asarray(a, dtype=np.int32) for a in (as_int64.ids, as_int64.position,
                                                                    as_int64.document, as_int64.block)))
    as_lists = TokenTable(*(np.asarray(a).tolist() for a in (as_int64.ids, as_int64.position,
                                                             as_int64.document, as_int64.block)))
    h = hashlib.sha256()
    for a in (np.arange(n) % 7, np.arange(n) % 5 + 1, np.arange(n) // 9, np.arange(n) // 5):
        h.update(a.astype(np.int32).tobytes())
    assert as_int64.fingerprint() == as_int32.fingerprint() == as_lists.fingerprint() == h.hexdigest()[:16]
    assert as_int64.ids.dtype == np.int32


def test_a_store_is_created_in_a_new_nested_or_an_existing_empty_directory_with_its_manifest(tmp_path):
    import json

    nested = TrajectoryStore.create(tmp_path / "runs" / "trajectories" / "m", _table(8), {"model": "m"})
    (tmp_path / "made").mkdir()
    existing = TrajectoryStore.create(tmp_path / "made", _table(8), {"model": "m"})
    for store in (nested, existing):
        manifest = json.loads((store.dir / "manifest.json").read_text())
        assert manifest["num_tokens"] == 8 and manifest["dtype"] == "float16" and manifest["unit"] == "nats"
        assert np.dtype(manifest["dtype"]) == np.dtype(np.float16)  # the dtype named is that of losses.f16


def test_evaluation_blocks_read_back_as_int64_token_ids(tmp_path):
    blocks = np.arange(24).reshape(3, 8)
    store = TrajectoryStore.create(tmp_path / "m", _table(21), {"model": "m"}, blocks=blocks)
    got = store.blocks()
    assert got.dtype == torch.int64 and torch.equal(got, torch.as_tensor(blocks))
    assert TrajectoryStore.create(tmp_path / "n", _table(21), {"model": "n"}).blocks() is None


def test_an_empty_store_reads_as_no_checkpoints_and_an_uncommitted_row_is_not_read(tmp_path):
    n = 10
    store = TrajectoryStore.create(tmp_path / "m", _table(n), {"model": "m"})
    empty = store.read()
    assert empty.losses.shape == (n, 0) and list(empty.steps) == []
    store.append(3, torch.arange(n, dtype=torch.float32).reshape(1, n), val_ppl=2.0, tokens=30)  # a batch of one
    with open(store.dir / "losses.f16", "ab") as fh:  # a killed writer's row, written but never committed
        fh.write(np.full(n, 7.0, dtype=np.float16).tobytes())
    traj = TrajectoryStore(tmp_path / "m").read()
    assert list(traj.steps) == [3] and traj.losses[:, 0].tolist() == list(range(n))


def test_open_stores_finds_every_store_in_directory_order_and_names_an_empty_root(tmp_path):
    from lmdynamics.trajectories.storage import model_dir_name, open_stores

    for name in ("EleutherAI/pythia-70m", "b-model", "a-model"):
        TrajectoryStore.create(tmp_path / model_dir_name(name), _table(4), {"model": name})
    (tmp_path / "not-a-store").mkdir()
    assert [s.dir.name for s in open_stores(str(tmp_path))] == ["EleutherAI--pythia-70m", "a-model", "b-model"]
    with pytest.raises(FileNotFoundError, match=f"no trajectory stores under {tmp_path / 'not-a-store'}"):
        open_stores(tmp_path / "not-a-store")
