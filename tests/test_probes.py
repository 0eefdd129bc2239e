"""Probe sets, probe sources and probe capture (one forward pass, hooks on every layer)."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

from lmdynamics.probes import (
    ProbeSet,
    activation_key,
    capture,
    load_activations,
    open_activations,
    pack_texts,
    parse_activation_key,
    probe_from_source,
    save_activations,
)
from lmdynamics.probes.sources import tokenizer_fingerprint

L, H, D, V = 2, 4, 32, 128


def tiny_model(seed=0, **overrides):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    kwargs = dict(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H, intermediate_size=4 * D,
                  max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False)
    kwargs.update(overrides)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**kwargs))
    with torch.no_grad():  # larger-than-default weights and biases, so that every term matters
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def word_tokenizer(words, shuffle_seed=None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    order = list(words)
    if shuffle_seed is not None:
        import random

        random.Random(shuffle_seed).shuffle(order)
    vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(order)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


WORDS = [f"w{i}" for i in range(60)]


# ------------------------------------------------------------------------------------------- ProbeSet
def test_from_sequences_last_position_and_sampling():
    seqs = torch.arange(10 * 7).view(10, 7)
    probe = ProbeSet.from_sequences(seqs, num_sequences=4, positions="last", seed=3)
    assert probe.input_ids.shape == (4, 7) and probe.positions.shape == (4, 1)
    assert (probe.positions == 6).all()
    # the kept rows are 4 distinct rows of the input, in their original order
    firsts = (probe.input_ids[:, 0] // 7).tolist()
    assert firsts == sorted(set(firsts)) and all(0 <= f < 10 for f in firsts)
    assert torch.equal(probe.input_ids, seqs[firsts])
    again = ProbeSet.from_sequences(seqs, num_sequences=4, positions="last", seed=3)
    other = ProbeSet.from_sequences(seqs, num_sequences=4, positions="last", seed=4)
    assert again.fingerprint() == probe.fingerprint() and other.fingerprint() != probe.fingerprint()


def test_from_sequences_sampled_positions():
    probe = ProbeSet.from_sequences([list(range(12))] * 5, num_sequences=5, positions=6, seed=0)
    assert probe.positions.shape == (5, 6) and probe.num_vectors == 30
    for row in probe.positions:
        assert row.tolist() == sorted(set(row.tolist())) and 0 <= int(row.min()) and int(row.max()) < 12
    assert len({tuple(r.tolist()) for r in probe.positions}) > 1  # drawn per sequence


def test_from_sequences_bad_input():
    with pytest.raises(ValueError, match="needs 8 sequences"):
        ProbeSet.from_sequences(torch.zeros(3, 5, dtype=torch.long), num_sequences=8)
    with pytest.raises(ValueError, match="positions"):
        ProbeSet.from_sequences(torch.zeros(3, 5, dtype=torch.long), num_sequences=3, positions=6)
    with pytest.raises(ValueError, match="different lengths"):
        ProbeSet.from_sequences([[1, 2, 3], [1, 2]], num_sequences=2)
    cut = ProbeSet.from_sequences([[1, 2, 3], [4, 5], [6, 7, 8, 9]], num_sequences=2, context_length=3)
    assert cut.input_ids.tolist() == [[1, 2, 3], [6, 7, 8]]


def test_save_load_roundtrip_atomic_and_corrupt(tmp_path):
    probe = ProbeSet.from_sequences(torch.randint(0, 50, (6, 9)), num_sequences=6, positions=3, meta={"source": "x"})
    path = probe.save(tmp_path / "probe.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["probe.safetensors"]  # no temporary left behind
    back = ProbeSet.load(path)
    assert torch.equal(back.input_ids, probe.input_ids) and torch.equal(back.positions, probe.positions)
    assert back.meta["source"] == "x" and back.fingerprint() == probe.fingerprint()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable probe file"):
        ProbeSet.load(bad)
    with pytest.raises(FileNotFoundError):
        ProbeSet.load(tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------------------- probe sources
def _docs(n=30, seed=0):
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) for _ in range(n)]


def test_pack_texts_matches_independent_tokenisation():
    tok = word_tokenizer(WORDS)
    docs = _docs()
    stream = []
    for d in docs:
        stream += tok.encode(d).ids + [0]
    packed = pack_texts(docs, tok, context_length=16, max_sequences=5)
    assert packed.shape == (5, 16)
    assert packed.reshape(-1).tolist() == stream[:80]


def test_text_file_formats_give_the_same_probe(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tok = word_tokenizer(WORDS)
    docs = _docs()
    (tmp_path / "p.txt").write_text("\n\n".join(docs))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    pq.write_table(pa.table({"text": docs}), tmp_path / "p.parquet")
    kw = dict(tokenizer=tok, context_length=16, num_sequences=4, positions="last", seed=0)
    probes = [probe_from_source(tmp_path / f"p.{ext}", **kw) for ext in ("txt", "jsonl", "parquet")]
    for p in probes[1:]:
        assert p.fingerprint() == probes[0].fingerprint()
    assert probes[0].meta["tokenizer"] == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(word_tokenizer(WORDS, shuffle_seed=1)) != tokenizer_fingerprint(tok)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        probe_from_source(tmp_path / "p.txt", tokenizer=None)
    with pytest.raises(ValueError, match="yields only"):
        probe_from_source(tmp_path / "p.txt", tokenizer=tok, context_length=16, num_sequences=10_000)


def test_hub_dataset_path_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmdynamics.probes import read_hub_texts

    docs = _docs(12)
    ds_dir = tmp_path / "mydata"
    (ds_dir / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": docs, "meta": list(range(12))}), ds_dir / "data" / "train-00000.parquet")
    assert list(read_hub_texts(str(ds_dir), split="train")) == docs
    with pytest.raises(ValueError, match="no field 'body'"):
        list(read_hub_texts(str(ds_dir), text_field="body"))
    with pytest.raises(ValueError, match="could not be loaded"):
        list(read_hub_texts("no-such-org/no-such-dataset"))


def test_run_directory_probe_is_reused(tmp_path):
    probe = ProbeSet.from_sequences(torch.randint(0, 50, (5, 8)), num_sequences=5)
    probe.save(tmp_path / "probe.safetensors")
    assert probe_from_source(tmp_path).fingerprint() == probe.fingerprint()
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="probe.safetensors"):
        probe_from_source(tmp_path / "empty_run")


# ---------------------------------------------------------------------------------------------- capture
def _probe(n=6, t=10, positions=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, t), generator=g)
    pos = positions if positions is not None else torch.full((n, 1), t - 1)
    return ProbeSet(ids, pos)


def test_capture_keys_shapes_and_one_forward_per_batch():
    model = tiny_model()
    calls = {"base": 0, "lm": 0}
    model.gpt_neox.register_forward_pre_hook(lambda m, a: calls.__setitem__("base", calls["base"] + 1))
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__("lm", calls["lm"] + 1))
    probe = _probe(n=7)
    acts = capture(model, probe, batch_size=3)
    assert calls == {"base": math.ceil(7 / 3), "lm": 0} and acts.forward_passes == 3
    want = {(-1, "final")} | {(i, c) for i in range(L) for c in ("ov", "attn", "mlp", "resid")}
    want |= {(i, f"ov_head{h:02d}") for i in range(L) for h in range(H)}
    assert set(acts) == want
    for value in acts.values():
        assert value.shape == (7, D) and value.dtype == torch.float32 and value.device.type == "cpu"
    sub = capture(model, probe, batch_size=8, components=["mlp"])
    assert set(sub) == {(i, "mlp") for i in range(L)} and sub.forward_passes == 1
    with pytest.raises(ValueError, match="unknown capture component"):
        capture(model, probe, components=["nope"])


def test_capture_matches_the_models_own_hidden_states_at_sampled_positions():
    model = tiny_model(seed=1)
    positions = torch.tensor([[0, 3, 9], [2, 5, 7], [1, 4, 8], [0, 1, 2]])
    probe = _probe(n=4, positions=positions)
    acts = capture(model, probe, batch_size=3)
    with torch.no_grad():
        out = model(probe.input_ids, output_hidden_states=True)
    hs = out.hidden_states  # embeddings, after layer 0, ..., after layer L-2, final (after the final layer norm)
    assert len(hs) == L + 1
    rows = torch.arange(4)[:, None]
    for i in range(L - 1):
        # row n*P + p is sequence n at positions[n, p]
        assert torch.allclose(acts[(i, "resid")], hs[i + 1][rows, positions].reshape(-1, D), atol=1e-5)
    assert torch.allclose(acts[(-1, "final")], hs[-1][rows, positions].reshape(-1, D), atol=1e-5)
    ln = model.gpt_neox.final_layer_norm
    assert torch.allclose(acts[(-1, "final")], ln(acts[(L - 1, "resid")]), atol=1e-5)
    # parallel residual: resid_i = resid_{i-1} + attn_i + mlp_i (embeddings before layer 0)
    prev = hs[0][rows, positions].reshape(-1, D)
    for i in range(L):
        assert torch.allclose(acts[(i, "resid")], prev + acts[(i, "attn")] + acts[(i, "mlp")], atol=1e-5)
        prev = acts[(i, "resid")]


def test_ov_activation_equals_attention_output_where_attention_is_trivial():
    """At position 0 a causal head can only attend to itself, so the attention block's output there is the
    OV activation plus the dense bias: per head (W_O masked to that head) and summed. This pins down the
    fused QKV head layout against the model's own attention."""
    model = tiny_model(seed=2)
    probe = _probe(n=5, positions=torch.zeros(5, 1, dtype=torch.long))
    acts = capture(model, probe, batch_size=5)
    dh = D // H
    for i, layer in enumerate(model.gpt_neox.layers):
        dense = layer.attention.dense
        assert torch.allclose(acts[(i, "ov")] + dense.bias, acts[(i, "attn")], atol=1e-5)
        for h in range(H):
            saved_w, saved_b = dense.weight.detach().clone(), dense.bias.detach().clone()
            with torch.no_grad():
                mask = torch.zeros_like(saved_w)
                mask[:, h * dh : (h + 1) * dh] = 1
                dense.weight.mul_(mask)
                dense.bias.zero_()
            only_h = capture(model, probe, components=["attn"])[(i, "attn")]
            with torch.no_grad():
                dense.weight.copy_(saved_w)
                dense.bias.copy_(saved_b)
            assert torch.allclose(acts[(i, f"ov_head{h:02d}")], only_h, atol=1e-5)
        assert not torch.allclose(acts[(i, "ov_head00")], acts[(i, "ov_head01")])


def test_probe_loss_equals_the_models_loss_and_modes_are_restored():
    model = tiny_model(seed=3)
    model.train()
    model.gpt_neox.layers[1].eval()  # a mixed state must come back exactly
    probe = _probe(n=6)
    acts = capture(model, probe, batch_size=4, loss=True)
    with torch.no_grad():
        model.eval()
        ref = model(probe.input_ids, labels=probe.input_ids).loss
    assert acts.loss == pytest.approx(float(ref), rel=1e-5)
    model.train()
    model.gpt_neox.layers[1].eval()
    capture(model, probe)
    assert model.training and model.gpt_neox.layers[0].training and not model.gpt_neox.layers[1].training


def test_capture_through_a_wrapper_and_on_the_base_model():
    class Wrapper(nn.Module):  # e.g. a LightningModule holding the model as an attribute
        def __init__(self, m):
            super().__init__()
            self.model = m

    model = tiny_model(seed=4)
    probe = _probe(n=3)
    direct = capture(model, probe)
    for holder in (Wrapper(model), model.gpt_neox):
        other = capture(holder, probe)
        assert set(other) == set(direct)
        assert all(torch.equal(other[k], direct[k]) for k in direct)
    assert capture(Wrapper(model), probe, loss=True).loss is not None
    with pytest.raises(ValueError, match="output head"):
        capture(model.gpt_neox, probe, loss=True)
    with pytest.raises(ValueError, match="holds no GPT-NeoX"):
        capture(nn.Linear(2, 2), probe)


def test_capture_refuses_a_probe_from_another_vocabulary():
    model = tiny_model(vocab_size=32)
    with pytest.raises(ValueError, match="vocabulary size 32"):
        capture(model, _probe(n=2))


# ------------------------------------------------------------------------------------ activation files
def test_activation_files_roundtrip(tmp_path):
    acts = capture(tiny_model(seed=5), _probe(n=4))
    path = save_activations(tmp_path / "a" / "step00000010.safetensors", acts)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("L01.mlp").dtype == torch.float16
        assert f.metadata()["forward_passes"] == "1"
    assert {"L00.mlp", "L01.ov_head03", "L-1.final"} <= keys
    back = load_activations(path)
    lazy = open_activations(path)
    assert set(back) == set(acts) == set(lazy)
    for k, v in acts.items():
        assert back[k].dtype == torch.float32
        assert torch.allclose(back[k], v, rtol=1e-3, atol=1e-3)
        assert torch.equal(lazy[k], back[k])
    assert parse_activation_key(activation_key(-1, "final")) == (-1, "final")
    assert parse_activation_key(activation_key(3, "ov_head07")) == (3, "ov_head07")
    assert [p.name for p in (tmp_path / "a").iterdir()] == [path.name]


def test_activation_overflow_keeps_float32(tmp_path):
    acts = {(0, "resid"): torch.tensor([[1e6, 1.0], [2.0, 3.0]]), (0, "mlp"): torch.ones(2, 2)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = save_activations(tmp_path / "x.safetensors", acts)
    assert any("overflow" in str(w.message) for w in caught)
    back = load_activations(path)
    assert back[(0, "resid")][0, 0] == 1e6
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="corrupt"):
        load_activations(truncated)


def test_markdown_files_are_plain_text_for_probes_and_corpora(tmp_path):
    """A .md file (the project's own docs, as the README uses them) reads exactly as the same text in a .txt."""
    from lmdynamics.data.corpus import load_corpus
    from lmdynamics.probes import read_texts

    text = "\n\n".join(_docs(6))
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "a.md").write_text(text)
    assert list(read_texts(tmp_path / "a.md")) == list(read_texts(tmp_path / "a.txt")) != []
    assert load_corpus(str(tmp_path / "a.md"), cache_dir=tmp_path / "c").documents == load_corpus(str(tmp_path / "a.txt"), cache_dir=tmp_path / "c").documents
