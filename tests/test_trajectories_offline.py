"""Offline trajectory recording (``trajectories.offline.record_source``) on a tiny synthetic run, fast.

Every stored loss is -log p(token | prefix) of the checkpoint at that step, recomputed here in float64 from the
model's logits; the validation perplexity is exp(mean loss) over the validation blocks when they are given
(else over the evaluation blocks); tokens = step x tokens_per_step of run.json; N = all parameters but the
input embedding (an untied head counts, ``models.sizes.matmul_parameters``); a rerun records only the steps not
stored yet; a text tokenised for another vocabulary is refused before anything is written.
"""

import json
import re

import numpy as np
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run
from lmdynamics.data.tokenizer import train_bpe
from lmdynamics.trajectories.offline import (EvaluationText, TokenizerMismatch, evaluation_text, non_embedding_parameters,
                                             record_source, record_sources, stored_text)

TOKENS_PER_STEP = 96


@pytest.fixture(scope="module")
def run(tmp_path_factory, local_text):
    root = tmp_path_factory.mktemp("offline")
    words = local_text.read_text()
    tok = train_bpe([words[:30_000]], 300, root / "tokenizer.json")
    (root / "eval.txt").write_text(words[:4000])
    (root / "val.txt").write_text(words[50_000:54_000])
    cfg = tiny_config(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    run_dir = write_synthetic_run(root / "run", [0, 5, 10], cfg, tok, run="tiny", tokens_per_step=TOKENS_PER_STEP)
    return root, run_dir, tok


def reference_losses(checkpoint, blocks: torch.Tensor) -> np.ndarray:
    """(N, T - 1) float64 next-token losses of a checkpoint, one block at a time."""
    model = GPTNeoXForCausalLM.from_pretrained(checkpoint).double().eval()
    with torch.no_grad():
        rows = []
        for block in blocks:
            logp = torch.log_softmax(model(input_ids=block[None]).logits[0, :-1], dim=-1)
            rows.append(-logp.gather(-1, block[1:, None]).squeeze(-1).numpy())
    return np.stack(rows)


def checkpoint_of(run_dir, step):
    return next(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step") and int(p.name[4:]) == step)


def test_recorded_losses_perplexity_tokens_and_parameters_are_the_checkpoints(run, tmp_path):
    root, run_dir, tok = run
    text = evaluation_text(tok, root / "eval.txt", 3, 12, val_text=root / "val.txt", val_blocks=2)
    assert text.blocks.shape == (3, 12) and text.val_blocks.shape == (2, 12)
    logged = []
    store = record_source(run_dir, text, tmp_path / "out", steps="0,10", log=logged.append)
    got = store.read()
    assert list(got.steps) == [0, 10] and list(got.tokens) == [0, 10 * TOKENS_PER_STEP]
    table = got.token_table
    for j, step in enumerate(got.steps):
        ckpt = checkpoint_of(run_dir, step)
        ref = reference_losses(ckpt, text.blocks)[table.block, table.position - 1]
        np.testing.assert_allclose(got.losses[:, j], ref, rtol=2.0 ** -10, atol=1e-4)  # stored as float16
        val = reference_losses(ckpt, text.val_blocks)
        assert got.val_ppl[j] == pytest.approx(np.exp(val.mean()), rel=1e-5)  # the validation text, token-weighted
        assert got.val_ppl[j] != pytest.approx(np.exp(reference_losses(ckpt, text.blocks).mean()), rel=1e-4)
        assert f"step {step}: validation perplexity {np.exp(val.mean()):.3f}" in logged[j]
    np.testing.assert_array_equal(table.ids, text.blocks.numpy()[table.block, table.position])
    model = GPTNeoXForCausalLM.from_pretrained(checkpoint_of(run_dir, 0))
    embedding = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in model.parameters()) - embedding
    assert got.meta["parameters"] == n == non_embedding_parameters(model)
    assert got.meta["model"] == "tiny" and got.meta["tokens_per_step"] == TOKENS_PER_STEP
    assert got.meta["val_ppl_on"] == "validation text" and got.meta["block_tokens"] == 12
    assert got.meta["source"] == str(run_dir) and got.meta["tokenizer"] == text.tokenizer_fp
    assert got.meta["text"] == str(root / "eval.txt")
    assert store.dir == tmp_path / "out" / "tiny"

    # a rerun over every step records step 5 only; the stored steps keep their values
    logged.clear()
    again = record_source(run_dir, text, tmp_path / "out", steps="all", log=logged.append).read()
    assert list(again.steps) == [0, 5, 10] and len(logged) == 1 and "step 5:" in logged[0]
    np.testing.assert_array_equal(again.losses[:, [0, 2]], got.losses)
    np.testing.assert_array_equal(again.val_ppl[[0, 2]], got.val_ppl)
    assert again.tokens[1] == 5 * TOKENS_PER_STEP


def test_without_validation_text_the_perplexity_is_over_the_evaluation_blocks(run, tmp_path):
    root, run_dir, tok = run
    text = evaluation_text(tok, root / "eval.txt", 2, 10)
    assert text.val_blocks is None
    got = record_source(run_dir, text, tmp_path / "out", steps=[5], log=lambda _: None).read()
    ref = reference_losses(checkpoint_of(run_dir, 5), text.blocks)
    assert got.val_ppl[0] == pytest.approx(np.exp(ref.mean()), rel=1e-5)
    assert got.meta["val_ppl_on"] == "evaluation text"
    # the kept blocks read back as an evaluation text of their own: the same values again
    back = stored_text(tmp_path / "out" / "tiny")
    assert torch.equal(back.blocks, text.blocks) and back.tokenizer_fp == text.tokenizer_fp
    again = record_source(run_dir, back, tmp_path / "again", steps=[5], log=lambda _: None).read()
    np.testing.assert_array_equal(again.losses, got.losses)
    # a rerun over every step: 0 before the stored 5 and 10 after it are both recorded
    full = record_source(run_dir, text, tmp_path / "out", steps="all", log=lambda _: None).read()
    assert list(full.steps) == [0, 5, 10] and np.array_equal(full.losses[:, 1], got.losses[:, 0])


def test_a_text_of_another_vocabulary_is_refused_before_anything_is_written(run, tmp_path):
    root, run_dir, tok = run
    text = evaluation_text(tok, root / "eval.txt", 2, 10)
    ids = text.blocks.clone()
    ids[1, 3] = 300  # one id past the model's last (the vocabulary is 0..299)
    wide = EvaluationText(ids, text.table, text.tokenizer_fp)
    with pytest.raises(TokenizerMismatch, match=r"tiny@step0: token id 300 >= the model's vocabulary \(300\)"):
        record_source(run_dir, wide, tmp_path / "out", steps=[0, 5], log=lambda _: None)
    assert not (tmp_path / "out").exists()
    other = EvaluationText(text.blocks, text.table, "another tokenizer")
    with pytest.raises(TokenizerMismatch, match="differs from the evaluation text's tokenizer"):
        record_sources([str(run_dir)], other, tmp_path / "out", steps="all", log=lambda _: None)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no checkpoint for step 7"):
        record_source(run_dir, text, tmp_path / "out", steps=[7], log=lambda _: None)
    assert not (tmp_path / "out").exists()
    json.loads((run_dir / "run.json").read_text())  # the run itself untouched


def test_several_sources_record_like_one_and_a_tied_head_counts_in_n(run, tmp_path):
    """``record_sources`` gives each source the store ``record_source`` gives it; N of a tied model counts the shared
    matrix once, as the head's matmul (all parameters but the input embedding, the head being that same matrix)."""
    root, run_dir, tok = run
    text = evaluation_text(tok, root / "eval.txt", 2, 10)
    one = record_source(run_dir, text, tmp_path / "one", steps="0,5", batch_size=1, log=lambda _: None).read()
    logged = []
    (many,) = record_sources([str(run_dir)], text, tmp_path / "many", steps="0,5", batch_size=2, log=logged.append)
    got = many.read()
    assert many.dir == tmp_path / "many" / "tiny" and list(got.steps) == [0, 5] and len(logged) == 2
    np.testing.assert_array_equal(got.losses, one.losses)
    np.testing.assert_array_equal(got.val_ppl, one.val_ppl)
    tied = GPTNeoXForCausalLM(tiny_config(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, tie_word_embeddings=True))
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    assert non_embedding_parameters(tied) == sum(p.numel() for p in tied.parameters())


def _hub_cache(run_dir, cache, repo: str, steps) -> None:
    """The run's checkpoints at ``steps`` imported into a hub cache as ``repo@stepN`` (the hub's own layout)."""
    from lmdynamics.checkpoints import add_to_hf_cache

    for step in steps:
        add_to_hf_cache(checkpoint_of(run_dir, step), repo, f"step{step}", cache)


def test_hub_sources_are_read_from_the_given_cache_and_every_tokenizer_is_checked_before_anything_is_written(
        run, tmp_path, local_text):
    """A hub id is found only in the cache given (``--hub_cache``; the hub itself is offline): its checkpoints record
    the run directory's values, and a later source whose cached tokenizer differs is refused before the first store
    is written, as for run directories."""
    root, run_dir, tok = run
    cache = tmp_path / "hub"
    _hub_cache(run_dir, cache, "org/tiny", [0, 5])
    text = evaluation_text(tok, root / "eval.txt", 2, 10)
    local = record_source(run_dir, text, tmp_path / "local", steps="0,5", log=lambda _: None).read()
    (hub,) = record_sources(["org/tiny"], text, tmp_path / "hub-out", steps="0,5", log=lambda _: None, cache_dir=cache)
    np.testing.assert_array_equal(hub.read().losses, local.losses)
    assert hub.dir == tmp_path / "hub-out" / "org--tiny"

    other_tok = train_bpe([local_text.read_text()[30_000:60_000]], 300, tmp_path / "other-tokenizer.json")
    cfg = tiny_config(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    other = write_synthetic_run(tmp_path / "other", [0, 5], cfg, other_tok, run="other", tokens_per_step=TOKENS_PER_STEP)
    _hub_cache(other, cache, "org/other", [0, 5])
    with pytest.raises(TokenizerMismatch, match="org/other@step0"):
        record_sources([str(run_dir), "org/other"], text, tmp_path / "out", steps="0,5", log=lambda _: None,
                       cache_dir=cache)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TokenizerMismatch, match="org/other@step0"):
        record_source("org/other", text, tmp_path / "out", steps="0,5", log=lambda _: None, cache_dir=cache)
    assert not (tmp_path / "out").exists()


def test_the_device_given_reaches_every_checkpoint_load(run, tmp_path, monkeypatch):
    """``--device`` (``record --device``) is the device every checkpoint is loaded on, through the CLI, several
    sources and one; ``load_model`` puts the model there (the meta device: no memory, shapes only)."""
    import lmdynamics.trajectories.offline as offline
    from lmdynamics.commands.trajectories import main

    root, run_dir, tok = run
    assert {p.device.type for p in offline.load_model(offline.open_source(run_dir).checkpoint(0), "meta").parameters()} \
        == {"meta"}
    seen, load = [], offline.load_model

    def spy(checkpoint, device="cpu", *args, **kwargs):
        seen.append((checkpoint.step, device))
        return load(checkpoint, device, *args, **kwargs)

    monkeypatch.setattr(offline, "load_model", spy)
    text = evaluation_text(tok, root / "eval.txt", 2, 10)
    record_sources([str(run_dir)], text, tmp_path / "many", steps="0,5", device="cpu:0", log=lambda _: None)
    record_source(run_dir, text, tmp_path / "one", steps=[10], device="cpu:0", log=lambda _: None)
    assert seen == [(0, "cpu:0"), (5, "cpu:0"), (10, "cpu:0")]
    seen.clear()
    assert main(["record", "--source", str(run_dir), "--text", str(root / "eval.txt"), "--blocks", "2",
                 "--block_tokens", "10", "--steps", "5", "--device", "cpu:0", "--out", str(tmp_path / "cli")]) == 0
    assert seen == [(5, "cpu:0")]


def test_by_default_every_checkpoint_is_recorded_and_validation_takes_as_many_blocks(run, tmp_path):
    root, run_dir, tok = run
    text = evaluation_text(tok, root / "eval.txt", 2, 10, val_text=root / "val.txt")
    assert text.val_blocks.shape == text.blocks.shape == (2, 10)  # val_blocks left out: as many as num_blocks
    assert list(record_source(run_dir, text, tmp_path / "one", log=lambda _: None).read().steps) == [0, 5, 10]
    (many,) = record_sources([str(run_dir)], text, tmp_path / "many", log=lambda _: None)
    assert list(many.read().steps) == [0, 5, 10]


def test_documents_are_packed_with_the_tokenizers_separator_and_without_its_special_tokens(tmp_path):
    """Each document is tokenised as its text alone (no BOS a template would add) and documents are joined by the
    tokenizer's end-of-text id, as ``evaluation_blocks`` packs them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from lmdynamics.trajectories.tokens import evaluation_blocks

    vocab = {"<|endoftext|>": 0, "<s>": 1, "a": 2, "b": 3, "c": 4, "[UNK]": 5}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    t.save(str(tmp_path / "tokenizer.json"))
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "a b c a"}\n{"text": "c b"}\n{"text": "b b a c"}\n')
    got = evaluation_text(tmp_path / "tokenizer.json", docs, 2, 5)
    expected, table = evaluation_blocks([[2, 3, 4, 2], [4, 3], [3, 3, 2, 4]], 2, 5, 0)
    assert torch.equal(got.blocks, expected) and 1 not in got.blocks and 0 in got.blocks
    np.testing.assert_array_equal(got.table.document, table.document)
    with_val = evaluation_text(tmp_path / "tokenizer.json", docs, 1, 5, val_text=docs, val_blocks=2)
    assert torch.equal(with_val.val_blocks, expected)  # the validation text packed the same way


def test_n_counts_every_parameter_but_the_input_embedding_for_every_kind_of_head():
    from lmdynamics.models.heads import HeadSpec, build_causal_lm

    for head in (HeadSpec(kind="low_rank", rank=4), HeadSpec(kind="mos", components=2, rank=None)):
        model = build_causal_lm(tiny_config(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32), head)
        embedding = model.get_input_embeddings().weight.numel()
        assert non_embedding_parameters(model) == sum(p.numel() for p in model.parameters()) - embedding


def test_a_half_precision_checkpoint_is_scored_in_float32_by_default(tmp_path):
    from types import SimpleNamespace

    from lmdynamics.trajectories.offline import load_model

    GPTNeoXForCausalLM(tiny_config(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)).half().save_pretrained(tmp_path / "ckpt")
    model = load_model(SimpleNamespace(path=tmp_path / "ckpt"))
    assert {p.dtype for p in model.parameters()} == {torch.float32} and not model.training


def test_a_stores_own_blocks_name_the_store_and_its_text(run, tmp_path):
    root, run_dir, tok = run
    text = evaluation_text(tok, root / "eval.txt", 2, 10)
    store = record_source(run_dir, text, tmp_path / "out", steps="0", log=lambda _: None)
    again = stored_text(store.dir)
    assert torch.equal(again.blocks, text.blocks)
    assert again.source == f"{store.dir} ({store.manifest['meta'].get('text', '')})" and str(store.dir) in again.source


@pytest.mark.parametrize("val_blocks, asked, moved", [(None, None, False), (None, 3, True), (5, None, False)])
def test_a_runs_validation_text_is_its_validation_split_packed_as_training_packs_it(tmp_path, pythia_tokenizer_file,
                                                                                      val_blocks, asked, moved):
    """``run_validation_text``: the run's held-out documents (``split_documents`` with its val_fraction and seed),
    each followed by end-of-text, cut into blocks of its context length; the first ``asked`` of them (default 16, or
    all its validation loop uses if fewer) to record, every block the loop uses for the validation perplexity; each
    token's document counted along the stream. A tokenizer file given replaces the one the config names (``moved``:
    no longer where training found it)."""
    from tokenizers import Tokenizer

    from lmdynamics.data.corpus import load_corpus
    from lmdynamics.data.packing import split_documents
    from lmdynamics.probes.sources import load_tokenizer, tokenizer_fingerprint
    from lmdynamics.trajectories.offline import run_validation_text
    from lmdynamics.trajectories.tokens import EvaluationTextTooShort
    from tests.helpers.trajectories import run_directory, short_documents

    docs = short_documents(n=80, seed=4)
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(docs))
    named = tmp_path / "moved" / "tokenizer.json" if moved else pythia_tokenizer_file
    data = {"source": str(text), "tokenizer": str(named), "context_length": 16, "val_fraction": 0.25,
            "seed": 3, "cache_dir": str(tmp_path / "cache"), **({"val_blocks": val_blocks} if val_blocks else {})}
    run = run_directory(tmp_path / "run", data, load_corpus(str(text), cache_dir=tmp_path / "cache").corpus_id)
    tok = Tokenizer.from_file(str(pythia_tokenizer_file))
    eos = tok.token_to_id("<|endoftext|>")
    stream = [i for d in split_documents(docs, 0.25, 3)[1] for i in tok.encode(d, add_special_tokens=False).ids + [eos]]
    every = torch.tensor(stream[: len(stream) // 16 * 16]).view(-1, 16)
    assert len(every) > 16
    loop = every[:val_blocks] if val_blocks else every
    n = asked or min(16, len(loop))
    got = run_validation_text(run, asked, pythia_tokenizer_file if moved else None)
    assert torch.equal(got.blocks, loop[:n]) and torch.equal(got.val_blocks, loop)
    scored = [b * 16 + p for b in range(n) for p in range(1, 16)]  # positions 1..15 of each block
    before = np.cumsum([0] + [i == eos for i in stream])  # end-of-text ids before each token of the stream
    assert got.table.ids.tolist() == [stream[g] for g in scored]
    assert got.table.document.tolist() == [before[g] for g in scored]
    assert got.table.position.tolist() == [g % 16 for g in scored] and got.table.block.tolist() == [g // 16 for g in scored]
    assert got.tokenizer_fp == tokenizer_fingerprint(load_tokenizer(pythia_tokenizer_file))
    assert got.source == f"validation split of {run}"
    for bad in (0, len(loop) + 1):
        with pytest.raises(EvaluationTextTooShort, match=rf"^{re.escape(str(run))} has {len(loop)} validation blocks; "
                                                         rf"ask for 1 to {len(loop)} \(--blocks\)$"):
            run_validation_text(run, bad, pythia_tokenizer_file if moved else None)
    if asked:  # the edges: one block, and every block the loop uses
        assert torch.equal(run_validation_text(run, 1, pythia_tokenizer_file if moved else None).blocks, loop[:1])
        assert torch.equal(run_validation_text(run, len(loop), pythia_tokenizer_file if moved else None).blocks, loop)
    text.write_text("\n\n".join(docs[1:]))  # the corpus changed since training: its validation split cannot be rebuilt
    with pytest.raises(ValueError, match=rf"^{re.escape(str(run))}: the corpus now reads as .*, not .* as in run.json"):
        run_validation_text(run, asked, pythia_tokenizer_file if moved else None)
