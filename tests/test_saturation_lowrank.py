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
    no_full = sweep(train, held, [2], train_full=False, **kwargs)
    assert set(no_full) == {"ranks", "full"}
