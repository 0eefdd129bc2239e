"""Rank-constrained head on a frozen backbone: r = d reaches the full head's loss; loss falls with r."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lmdynamics.saturation.lowrank_head import features, head_loss, rank_grid, sweep, train_head


@pytest.fixture(scope="module")
def teacher():
    """A tiny GPT-NeoX whose own samples are the corpus: its full-rank head is then the best head there is."""
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=96, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # peaky next-token distributions: low rank hurts
        blocks = torch.randint(0, 96, (768, 1))
        for _ in range(23):
            logits = model(input_ids=blocks).logits[:, -1]
            blocks = torch.cat([blocks, torch.multinomial(logits.softmax(-1), 1)], dim=1)
    return model, blocks


def test_r_equal_d_reaches_the_full_head_and_loss_does_not_rise_with_r(teacher):
    model, blocks = teacher
    train, held = features(model, blocks[:512]), features(model, blocks[512:])
    for init, steps, lr in (("svd", 80, 3e-3), ("normal", 300, 2e-2)):
        result = sweep(train, held, [1, 2, 4, 8, 16], steps=steps, lr=lr, batch=1024, init=init)
        losses = result["ranks"]
        # the same function class as a full head trained the same way, and near the teacher's own head
        assert losses[16] == pytest.approx(result["full_trained"], abs=0.05), (init, losses, result)
        assert losses[16] < result["full"] + 0.1, (init, losses, result)
        for lo, hi in zip([1, 2, 4, 8], [2, 4, 8, 16]):
            assert losses[hi] <= losses[lo] + 0.02, (init, losses)
        assert losses[1] > result["full"] + 0.3  # rank 1 really is a bottleneck here


def test_full_head_loss_matches_the_model_and_grid():
    torch.manual_seed(1)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16, max_position_embeddings=16)).eval()
    blocks = torch.randint(0, 50, (4, 16))
    f = features(model, blocks)
    with torch.no_grad():
        ref = model(input_ids=blocks, labels=blocks).loss
    assert head_loss(f.h, f.y, f.head) == pytest.approx(float(ref), rel=1e-5)
    # at r = d the svd start is the full head itself
    w = train_head(f, 8, steps=0)
    assert torch.allclose(w, f.head, atol=1e-5)
    assert rank_grid(768) == [32, 64, 128, 256, 512, 768] and rank_grid(128) == [8, 16, 32, 64, 128]


def adamw_reference(head, h, y, r, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    """W after ``steps`` AdamW steps on mean cross-entropy of logits h (A B)^T, written out in float64
    (Loshchilov & Hutter 2019: decoupled decay p -= lr wd p, then the bias-corrected Adam step), from the
    Eckart-Young start A = U_r S_r^1/2, B = S_r^1/2 V_r^T (numpy's SVD); r=None: one full V x d matrix."""
    import numpy as np

    u, s, vt = np.linalg.svd(head.double().numpy(), full_matrices=False)
    k = r or min(head.shape)
    a, b = u[:, :k] * np.sqrt(s[:k]), np.sqrt(s[:k])[:, None] * vt[:k]
    params = [torch.tensor(a @ b, requires_grad=True)] if r is None else [torch.tensor(a, requires_grad=True),
                                                                          torch.tensor(b, requires_grad=True)]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        w = params[0] if r is None else params[0] @ params[1]
        loss = torch.nn.functional.cross_entropy(h.double() @ w.T, y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, m_, v_ in zip(params, grads, m, v):
                p.mul_(1 - lr * weight_decay)
                m_.mul_(betas[0]).add_((1 - betas[0]) * g)
                v_.mul_(betas[1]).add_((1 - betas[1]) * g * g)
                p.sub_(lr * (m_ / (1 - betas[0] ** t)) / ((v_ / (1 - betas[1] ** t)).sqrt() + eps))
    return (params[0] if r is None else params[0] @ params[1]).detach()


@pytest.mark.parametrize("r, weight_decay", [(3, 0.0), (2, 0.1), (None, 0.1)])
def test_train_head_is_adamw_from_the_svd_start(r, weight_decay):
    """Every training token the same (one hidden state, one target), so any batch gives the same gradient:
    the trained W is the written-out AdamW(0.9, 0.95) of the docstring, step for step."""
    from lmdynamics.saturation.lowrank_head import Features

    g = torch.Generator().manual_seed(3)
    head = torch.randn(7, 4, generator=g)
    h = torch.randn(1, 4, generator=g).repeat(20, 1)
    y = torch.full((20,), 5)
    got = train_head(Features(h, y, head), r, steps=4, lr=0.05, batch=8, weight_decay=weight_decay)
    want = adamw_reference(head, h, y, r, 4, 0.05, weight_decay)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    start = adamw_reference(head, h, y, r, 0, 0.05, weight_decay)
    assert (got.double() - start).abs().max() > 0.01  # it did train


def test_normal_init_has_the_documented_scale_and_follows_the_seed():
    from lmdynamics.saturation.lowrank_head import init_factors

    head = torch.zeros(4000, 64)
    a, b = init_factors(head, 16, "normal", seed=0)
    assert a.shape == (4000, 16) and b.shape == (16, 64)
    assert float(a.std()) == pytest.approx(1 / 16**0.5, rel=0.03) and float(b.std()) == pytest.approx(1 / 64**0.5, rel=0.05)
    assert abs(float(a.mean())) < 0.01 and abs(float(b.mean())) < 0.02
    a2, b2 = init_factors(head, 16, "normal", seed=0)
    a3, _ = init_factors(head, 16, "normal", seed=1)
    assert torch.equal(a, a2) and torch.equal(b, b2) and not torch.equal(a, a3)
    with pytest.raises(ValueError, match="init must be 'svd' or 'normal'"):
        init_factors(head, 16, "xavier", seed=0)


@pytest.mark.parametrize("r", [1, 2, 5])
def test_svd_init_is_the_best_rank_r_approximation(r):
    """A B = the truncated SVD of the head (Eckart-Young), A and B sharing the singular values' square roots."""
    import numpy as np

    from lmdynamics.saturation.lowrank_head import init_factors

    head = torch.randn(9, 6, generator=torch.Generator().manual_seed(r))
    a, b = init_factors(head, r, "svd", seed=0)
    u, s, vt = np.linalg.svd(head.double().numpy(), full_matrices=False)
    np.testing.assert_allclose((a @ b).double().numpy(), (u[:, :r] * s[:r]) @ vt[:r], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a.double().numpy(), axis=0), np.sqrt(s[:r]), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(b.double().numpy(), axis=1), np.sqrt(s[:r]), rtol=1e-5)


def test_rank_grid_is_the_documented_log_grid():
    """From r_min (default 32 for d >= 512, else d/16, at least 1) to d: r_min, the powers of two between, d."""
    for d in (1, 8, 16, 100, 511, 512, 768, 1024):
        for r_min in (None, 1, 3, 32, 2000):
            low = (32 if d >= 512 else max(1, d // 16)) if r_min is None else max(1, min(r_min, d))
            want = sorted({low, d} | {2**k for k in range(12) if low < 2**k < d})
            assert rank_grid(d, r_min) == want, (d, r_min)


def test_head_loss_in_chunks_is_the_float64_mean_cross_entropy():
    g = torch.Generator().manual_seed(0)
    h, w, y = torch.randn(37, 5, generator=g), torch.randn(11, 5, generator=g), torch.randint(0, 11, (37,), generator=g)
    ref = float(torch.nn.functional.cross_entropy(h.double() @ w.double().T, y))
    for chunk in (1, 5, 36, 37, 4096):
        assert head_loss(h, y, w, chunk=chunk) == pytest.approx(ref, rel=1e-6), chunk


def test_sweep_reports_each_rank_the_own_head_and_the_full_trained_head():
    """Each loss is the held-out head_loss of train_head's W for that rank (same kwargs); ``full`` is the
    checkpoint's own head on the held-out features; ``full_trained`` only when asked."""
    from lmdynamics.saturation.lowrank_head import Features, Progress

    g = torch.Generator().manual_seed(2)
    head = torch.randn(9, 4, generator=g)
    train = Features(torch.randn(64, 4, generator=g), torch.randint(0, 9, (64,), generator=g), head)
    held = Features(torch.randn(32, 4, generator=g), torch.randint(0, 9, (32,), generator=g), head)
    kwargs = dict(steps=5, lr=0.02, batch=16, seed=3)
    import io

    stream = io.StringIO()
    out = sweep(train, held, [1, 3], progress=Progress(stream=stream, every_seconds=0.0), **kwargs)
    assert set(out) == {"ranks", "full", "full_trained"} and list(out["ranks"]) == [1, 3]
    for r in (1, 3, None):
        want = head_loss(held.h, held.y, train_head(train, r, **kwargs))
        assert (out["ranks"][r] if r else out["full_trained"]) == pytest.approx(want, rel=1e-6), r
    assert out["full"] == pytest.approx(head_loss(held.h, held.y, head), rel=1e-9)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[lmdynamics] lowrank-head: training heads 0/15 head steps")  # 3 heads x 5 steps
    assert any("15/15 head steps | head 3/3 (full)" in line for line in lines) and "done in" in lines[-1]
    stream = io.StringIO()  # the default budget (train_head's 300 steps) and no full head: 300 head steps, rank 2's
    no_full = sweep(train, held, [2], train_full=False, progress=Progress(stream=stream, every_seconds=0.0), lr=0.02)
    assert set(no_full) == {"ranks", "full"}
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[lmdynamics] lowrank-head: training heads 0/300 head steps")
    assert any("300/300 head steps | head 1/1 (rank 2)" in line for line in lines)
    assert not any("(full)" in line for line in lines)


def test_progress_lines_give_units_elapsed_and_the_phase_eta(monkeypatch):
    """A line when a phase starts, then one every ``every_seconds``; ETA = the phase's units left x its seconds
    per unit so far; each finished phase's wall time is kept; ``done`` prints the total elapsed time."""
    import io

    from lmdynamics.saturation import lowrank_head

    now = [100.0]
    monkeypatch.setattr(lowrank_head.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    p = lowrank_head.Progress(stream=stream, every_seconds=10.0, label="lr")
    p.phase("loading")
    now[0] += 5
    p.phase("heads", 1000, "steps")
    now[0] += 4
    p.advance(100)  # 4 s after the last line: no line
    now[0] += 6
    p.advance(150)  # 250 done in 10 s: 750 left at 0.04 s each = 30 s
    p.detail = "head 1/2"
    now[0] += 3700
    p.advance(250)  # 500 done in 3710 s: 500 left = 3710 s
    assert p.eta() == pytest.approx(3710.0)
    now[0] += 1
    p.phase("loading")  # a phase entered again adds to its time
    now[0] += 2
    p.done()
    lines = stream.getvalue().splitlines()
    assert lines == ["[lmdynamics] lr: loading | elapsed 0:00:00",
                     "[lmdynamics] lr: heads 0/1,000 steps | elapsed 0:00:05 | ETA ?",
                     "[lmdynamics] lr: heads 250/1,000 steps | elapsed 0:00:15 | ETA 0:00:30",
                     "[lmdynamics] lr: heads 500/1,000 steps | head 1/2 | elapsed 1:01:55 | ETA 1:01:50",
                     "[lmdynamics] lr: loading | elapsed 1:01:56",
                     "[lmdynamics] lr: done in 1:01:58"]
    assert p.seconds == {"loading": 7.0, "heads": 3711.0}
    quiet = lowrank_head.Progress(stream=None)
    quiet.phase("x", 3, "u")
    quiet.advance()
    quiet.done()
    assert "x" in quiet.seconds


@pytest.fixture(scope="module")
def checkpoint_and_text(tmp_path_factory, local_text):
    from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run
    from lmdynamics.data.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("lowrank")
    text = root / "text.txt"
    text.write_text("\n\n".join(local_text.read_text().split("\n\n")[:40]))
    tok = train_bpe([text.read_text()], 300, root / "tokenizer.json")
    cfg = tiny_config(vocab_size=300, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    run = write_synthetic_run(root / "run", [0, 4], cfg, tok, run="lr-run", tokens_per_step=10)
    return run / "checkpoints" / "step00000004", text, root


def test_run_writes_the_sweep_of_a_checkpoint_on_its_own_tokenised_corpus(checkpoint_and_text, tmp_path):
    """``run``: csv rows = the sweep's result, ``full`` = the checkpoint's own loss on the held-out blocks (the
    model's own forward), token counts of the blocks used, the same rows in the run's table."""
    import pandas as pd

    from lmdynamics import store
    from lmdynamics.data.datamodule import TextDataModule
    from lmdynamics.saturation.lowrank_head import Progress, run

    ckpt, text, root = checkpoint_and_text
    path, result = run(ckpt, tmp_path / "out", source=str(text), ranks=[8, 1, 4, 8], train_blocks=6, eval_blocks=3,
                       context_length=16, cache_dir=str(root / "cache"), progress=Progress(stream=None),
                       steps=3, lr=0.01, batch=32)
    csv = pd.read_csv(path)
    assert list(csv.r) == [1, 4, 8, 8, 8] and list(csv.reference.fillna("")) == ["", "", "", "full", "full_trained"]
    assert list(csv.loss) == pytest.approx([result["ranks"][1], result["ranks"][4], result["ranks"][8], result["full"],
                                            result["full_trained"]])  # rank d = 8, the hidden size, is allowed
    assert (csv.train_tokens == 6 * 15).all() and (csv.eval_tokens == 3 * 15).all()
    dm = TextDataModule(source=str(text), tokenizer=str(ckpt / "tokenizer.json"), context_length=16, val_blocks=None,
                        cache_dir=str(root / "cache"))
    dm.prepare()
    model = GPTNeoXForCausalLM.from_pretrained(ckpt).double().eval()
    held = dm.val_all[:3]
    with torch.no_grad():
        own = float(model(input_ids=held, labels=held).loss)
    assert result["full"] == pytest.approx(own, rel=1e-5)
    rows = store.read_table(store.table_path(tmp_path / "out"))
    assert set(rows.step) == {4} and set(rows.tokens) == {40} and set(rows.run) == {"lr-run"}
    ranks = rows[rows.metric == "lowrank_head_loss"].sort_values("index")
    assert list(ranks["index"]) == [1, 4, 8] and list(ranks.value) == pytest.approx([result["ranks"][r] for r in (1, 4, 8)])
    with pytest.raises(ValueError, match=r"ranks must lie in 1\.\.8"):
        run(ckpt, tmp_path / "bad", source=str(text), ranks=[9], train_blocks=2, eval_blocks=1, context_length=16,
            cache_dir=str(root / "cache"), progress=Progress(stream=None), steps=1)
    assert not (tmp_path / "bad").exists()


def test_run_refuses_a_directory_without_weights_config_or_tokenizer(checkpoint_and_text, tmp_path):
    from lmdynamics.saturation.lowrank_head import run

    ckpt, text, _ = checkpoint_and_text
    with pytest.raises(FileNotFoundError, match="not a Hugging Face checkpoint directory"):
        run(tmp_path, tmp_path / "out", source=str(text))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no tokenizer.json beside the weights"):
        run(bare, tmp_path / "out", source=str(text))
    assert not (tmp_path / "out").exists()


def test_svd_init_at_or_above_the_head_rank_is_the_head_itself():
    """Eckart-Young: the best approximation of rank at most r >= min(V, d) is the head itself, and the factors
    are the thin SVD's (V x min(V, d) and min(V, d) x d, never the V x V full U of a large vocabulary)."""
    from lmdynamics.saturation.lowrank_head import init_factors

    head = torch.randn(9, 6, generator=torch.Generator().manual_seed(4))
    for r in (6, 7, 9):
        a, b = init_factors(head, r, "svd", seed=0)
        assert a.shape == (9, 6) and b.shape == (6, 6), r
        torch.testing.assert_close(a @ b, head, atol=1e-5, rtol=1e-5)


def test_train_head_defaults_are_the_documented_budget():
    """train_head's defaults: 300 steps at lr 1e-4, batches of 1024 tokens, the svd start, seed 0, no decay."""
    from lmdynamics.saturation.lowrank_head import Features

    g = torch.Generator().manual_seed(5)
    f = Features(torch.randn(1100, 4, generator=g), torch.randint(0, 7, (1100,), generator=g), torch.randn(7, 4, generator=g))
    got = train_head(f, 2)
    want = train_head(f, 2, steps=300, lr=1e-4, batch=1024, init="svd", seed=0, weight_decay=0.0)
    assert torch.equal(got, want)
    start = train_head(f, 2, steps=0)
    assert (got - start).abs().max() > 1e-3  # it did train


def test_train_head_on_a_single_cached_token():
    """One training token is enough: every batch draws it, so W is the written-out AdamW on that token."""
    from lmdynamics.saturation.lowrank_head import Features

    g = torch.Generator().manual_seed(6)
    head, h, y = torch.randn(7, 4, generator=g), torch.randn(1, 4, generator=g), torch.tensor([2])
    got = train_head(Features(h, y, head), 3, steps=4, lr=0.05, batch=8)
    torch.testing.assert_close(got.double(), adamw_reference(head, h, y, 3, 4, 0.05, 0.0), rtol=1e-4, atol=1e-5)


def test_progress_defaults_and_done_ends_the_phase(monkeypatch):
    """A line every 10 s by default; a phase without a unit shows its bare count; after ``done`` no phase is
    open, so time after it (a second ``done``, a later phase) is not booked to any phase."""
    import io

    from lmdynamics.saturation import lowrank_head

    now = [50.0]
    monkeypatch.setattr(lowrank_head.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    p = lowrank_head.Progress(stream=stream)
    p.phase("x", 3)
    now[0] += 9
    p.advance()  # 9 s: no line
    now[0] += 1
    p.advance()  # 10 s: a line
    p.done()
    now[0] += 5
    p.done()
    p.phase("y")
    p.done()
    assert stream.getvalue().splitlines() == ["[lmdynamics] lowrank-head: x 0/3  | elapsed 0:00:00 | ETA ?",
                                              "[lmdynamics] lowrank-head: x 2/3  | elapsed 0:00:10 | ETA 0:00:05",
                                              "[lmdynamics] lowrank-head: done in 0:00:10",
                                              "[lmdynamics] lowrank-head: done in 0:00:15",
                                              "[lmdynamics] lowrank-head: y | elapsed 0:00:15",
                                              "[lmdynamics] lowrank-head: done in 0:00:15"]
    assert p.seconds == {"x": 10.0, "y": 0.0}


def test_run_reports_its_phases_the_rank_grid_and_the_csv_layout(checkpoint_and_text, tmp_path):
    """``run`` without ranks sweeps rank_grid(d, r_min); its progress shows each phase (blocks of the backbone
    counted as both splits go through, then the heads' steps with the options passed); the csv has exactly the
    documented columns, the checkpoint named in every row; ranks outside 1..d are refused, naming them."""
    import io

    import pandas as pd

    from lmdynamics.saturation.lowrank_head import Progress, run

    ckpt, text, root = checkpoint_and_text
    stream = io.StringIO()
    progress = Progress(stream=stream, every_seconds=0.0)
    path, result = run(ckpt, tmp_path / "out", source=str(text), r_min=2, train_blocks=6, eval_blocks=3,
                       context_length=16, cache_dir=str(root / "cache"), progress=progress, steps=3, lr=0.01, batch=32)
    assert list(result["ranks"]) == [2, 4, 8]
    csv = pd.read_csv(path)
    assert list(csv.columns) == ["r", "loss", "reference", "checkpoint", "train_tokens", "eval_tokens"]
    assert list(csv.r) == [2, 4, 8, 8, 8] and (csv.checkpoint == str(ckpt)).all()
    lines = [line.removeprefix("[lmdynamics] lowrank-head: ") for line in stream.getvalue().splitlines()]
    for start in ("loading the checkpoint |", "tokenising the corpus |", "hidden states of the frozen backbone 0/9 blocks |",
                  "hidden states of the frozen backbone 6/9 blocks |", "hidden states of the frozen backbone 9/9 blocks |",
                  "training heads 0/12 head steps |", "training heads 12/12 head steps | head 4/4 (full)"):
        assert any(line.startswith(start) for line in lines), (start, lines)
    assert lines[-1].startswith("done in")
    assert set(progress.seconds) == {"loading the checkpoint", "tokenising the corpus",
                                     "hidden states of the frozen backbone", "training heads"}
    for bad in ([0], [0, 4]):
        with pytest.raises(ValueError, match=r"ranks must lie in 1\.\.8"):
            run(ckpt, tmp_path / "bad", source=str(text), ranks=bad, train_blocks=2, eval_blocks=1, context_length=16,
                cache_dir=str(root / "cache"), progress=Progress(stream=None), steps=1)
    assert not (tmp_path / "bad").exists()


class _Stop(Exception):
    pass


def test_run_defaults_reach_the_loader_the_corpus_and_the_sweep(monkeypatch, tmp_path):
    """The backbone is loaded in float32; the corpus is python-docs by default, tokenised by the checkpoint's
    tokenizer at min(max_position_embeddings, 2048) tokens a block into the given cache; 1024 training and 64
    held-out blocks; ranks default to rank_grid(d); with no progress given, a Progress is made."""
    from types import SimpleNamespace

    import lmdynamics.data.datamodule as datamodule
    import lmdynamics.models.heads as heads
    from lmdynamics.saturation import lowrank_head

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "tokenizer.json").write_text("{}")
    seen = {}

    class Model:
        def __init__(self, n):
            self.config = SimpleNamespace(max_position_embeddings=n)

        def eval(self):
            return self

    def load(path, **kwargs):
        seen["load"] = kwargs
        return Model(seen["max_pos"])

    class DataModule:
        def __init__(self, **kwargs):
            seen["dm"] = kwargs

        def prepare(self):
            self.train_blocks = torch.zeros(2000, 3, dtype=torch.long)
            self.val_all = torch.ones(100, 3, dtype=torch.long)

    def features(model, blocks, progress=None):
        seen["blocks"].append(len(blocks))
        return lowrank_head.Features(torch.zeros(2, 40), torch.zeros(2, dtype=torch.long), torch.zeros(5, 40))

    def sweep(train, held, ranks, progress=None, **kwargs):
        seen["sweep"] = (ranks, progress, kwargs)
        raise _Stop

    monkeypatch.setattr(heads, "load_causal_lm", load)
    monkeypatch.setattr(datamodule, "TextDataModule", DataModule)
    monkeypatch.setattr(lowrank_head, "features", features)
    monkeypatch.setattr(lowrank_head, "sweep", sweep)
    for max_pos, context_length, want_ctx in ((4096, None, 2048), (16, None, 16), (4096, 8, 8)):
        seen.update(max_pos=max_pos, blocks=[])
        with pytest.raises(_Stop):
            lowrank_head.run(ckpt, tmp_path / "out", context_length=context_length, cache_dir=str(tmp_path / "c"))
        assert seen["load"] == {"dtype": torch.float32}
        dm = {k: seen["dm"].get(k) for k in ("source", "tokenizer", "context_length", "cache_dir")}
        assert dm == dict(source="python-docs", tokenizer=str(ckpt / "tokenizer.json"), context_length=want_ctx,
                          cache_dir=str(tmp_path / "c"))  # held-out blocks come from val_all, whatever val_blocks
        assert seen["blocks"] == [1024, 64]
        ranks, progress, kwargs = seen["sweep"]
        assert ranks == rank_grid(40) and isinstance(progress, lowrank_head.Progress) and kwargs == {}
    assert not (tmp_path / "out").exists()
