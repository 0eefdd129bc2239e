"""OV circuits and the head layout, proven against a real transformers GPT-NeoX attention module."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXModel
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

from lmdynamics.metrics import (
    ov_activations,
    ov_circuits,
    ov_gradient,
    ov_singular_values,
    singular_values,
    split_dense,
    split_qkv,
)

HEADS = 4
HIDDEN = 48  # d_head 12, rotary on 25% of it


@pytest.fixture(scope="module")
def captured():
    """A random 2-layer GPT-NeoX in float64 (eager attention); layer 1's attention input, output, pattern."""
    cfg = GPTNeoXConfig(
        hidden_size=HIDDEN, num_attention_heads=HEADS, num_hidden_layers=2, intermediate_size=96,
        vocab_size=100, max_position_embeddings=64,
    )
    cfg._attn_implementation = "eager"  # so the module returns its attention weights
    torch.manual_seed(0)
    model = GPTNeoXModel(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # large random weights and biases: peaked, head-specific attention patterns
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.4)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    attn = model.layers[1].attention
    cap = {}

    def hook(module, args, kwargs, out):
        cap["x"] = args[0] if args else kwargs["hidden_states"]
        cap["position_embeddings"] = kwargs["position_embeddings"]
        cap["out"], cap["weights"] = out

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(torch.randint(0, 100, (3, 11), generator=g))
    handle.remove()
    w_qkv, b_qkv = attn.query_key_value.weight.detach(), attn.query_key_value.bias.detach()
    w_dense, b_dense = attn.dense.weight.detach(), attn.dense.bias.detach()
    return cap, w_qkv, b_qkv, w_dense, b_dense


def through_pattern(weights, per_head):
    """sum_h A_h @ per_head[h]: weights (B, H, T, T), per_head [H, B, T, d]."""
    return torch.einsum("bhts,hbsd->btd", weights, per_head)


def test_module_really_attends(captured):
    cap = captured[0]
    assert cap["weights"].max() > 0.9  # not uniform: the head layout below is tested on a sharp pattern
    assert (cap["weights"][:, 0] - cap["weights"][:, 1]).abs().max() > 0.5


def test_split_heads_recompute_attention_output(captured):
    cap, w_qkv, b_qkv, w_dense, b_dense = captured
    x, a = cap["x"], cap["weights"]
    _, _, v = split_qkv(w_qkv, b_qkv, HEADS)
    w_o = split_dense(w_dense, HEADS)
    assert v.weight.shape == (HEADS, HIDDEN // HEADS, HIDDEN) and v.bias.shape == (HEADS, HIDDEN // HEADS)
    assert w_o.shape == (HEADS, HIDDEN, HIDDEN // HEADS)
    values = torch.einsum("btd,hjd->hbtj", x, v.weight) + v.bias[:, None, None, :]
    out = sum(torch.einsum("bts,bsj,dj->btd", a[:, h], values[h], w_o[h]) for h in range(HEADS)) + b_dense
    torch.testing.assert_close(out, cap["out"], rtol=1e-12, atol=1e-12)


def test_ov_circuits_recompute_attention_output(captured):
    cap, w_qkv, b_qkv, w_dense, b_dense = captured
    ov = ov_circuits(w_qkv, b_qkv, w_dense, HEADS)
    assert ov.weight.shape == (HEADS, HIDDEN, HIDDEN) and ov.bias.shape == (HEADS, HIDDEN)
    per_head = torch.einsum("btd,hed->hbte", cap["x"], ov.weight) + ov.bias[:, None, None, :]
    torch.testing.assert_close(through_pattern(cap["weights"], per_head) + b_dense, cap["out"], rtol=1e-12, atol=1e-12)
    # the OV activations (no attention pattern) are the same per-head vectors
    acts = ov_activations(cap["x"], w_qkv, b_qkv, w_dense, HEADS)
    assert acts.shape == (HEADS, *cap["x"].shape)
    torch.testing.assert_close(acts, per_head, rtol=1e-12, atol=1e-12)


def test_wrong_layout_does_not_recompute_output(captured):
    """Negative control: the original study's "V = last third of W_qkv" mixes heads and fails."""
    cap, w_qkv, b_qkv, w_dense, b_dense = captured
    d = HIDDEN
    w_v_wrong = w_qkv[2 * d :].reshape(HEADS, d // HEADS, d)
    b_v_wrong = b_qkv[2 * d :].reshape(HEADS, d // HEADS)
    w_o = split_dense(w_dense, HEADS)
    values = torch.einsum("btd,hjd->hbtj", cap["x"], w_v_wrong) + b_v_wrong[:, None, None, :]
    out = through_pattern(cap["weights"], torch.einsum("hbtj,hdj->hbtd", values, w_o)) + b_dense
    assert (out - cap["out"]).abs().max() > 0.1 * cap["out"].abs().max()


def test_query_key_split_recomputes_attention_pattern(captured):
    cap, w_qkv, b_qkv, *_ = captured
    x = cap["x"]
    q, k, _ = split_qkv(w_qkv, b_qkv, HEADS)
    qs = torch.einsum("btd,hjd->bhtj", x, q.weight) + q.bias[None, :, None, :]
    ks = torch.einsum("btd,hjd->bhtj", x, k.weight) + k.bias[None, :, None, :]
    cos, sin = cap["position_embeddings"]
    qs, ks = apply_rotary_pos_emb(qs, ks, cos, sin)
    t = x.shape[1]
    scores = qs @ ks.transpose(-1, -2) / (HIDDEN // HEADS) ** 0.5
    scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    # the module runs its softmax in float32
    torch.testing.assert_close(torch.softmax(scores, -1), cap["weights"], rtol=0, atol=1e-6)


def test_split_qkv_without_bias_and_errors(captured):
    _, w_qkv, _, w_dense, _ = captured
    q, k, v = split_qkv(w_qkv, None, HEADS)
    assert q.bias is None and v.bias is None
    assert ov_circuits(w_qkv, None, w_dense, HEADS).bias is None
    with pytest.raises(ValueError, match="does not split"):
        split_qkv(w_qkv[:-1], None, HEADS)
    with pytest.raises(ValueError, match="does not split"):
        split_qkv(w_qkv, None, 5)


def test_ov_singular_values_match_the_products(captured):
    _, w_qkv, b_qkv, w_dense, _ = captured
    s = ov_singular_values(w_qkv, w_dense, HEADS)
    ref = torch.linalg.svdvals(ov_circuits(w_qkv, b_qkv, w_dense, HEADS).weight)
    dh = HIDDEN // HEADS
    assert s.shape == (HEADS, HIDDEN)
    torch.testing.assert_close(s[:, :dh], ref[:, :dh], rtol=1e-10, atol=0)
    assert torch.all(s[:, dh:] == 0) and ref[:, dh:].max() < 1e-12 * ref[:, 0].min()  # rank <= d_head
    torch.testing.assert_close(singular_values(ov_circuits(w_qkv, b_qkv, w_dense, HEADS).weight)[:, :dh], s[:, :dh], rtol=1e-9, atol=0)


def test_ov_gradient_is_the_product_rule():
    g = torch.Generator().manual_seed(3)
    w_o, g_o = (torch.randn(HEADS, 20, 5, generator=g, dtype=torch.float64) for _ in range(2))
    w_v, g_v = (torch.randn(HEADS, 5, 20, generator=g, dtype=torch.float64) for _ in range(2))
    _, tangent = torch.func.jvp(torch.matmul, (w_o, w_v), (g_o, g_v))  # d/dt (W_O + t G_O)(W_V + t G_V) at 0
    torch.testing.assert_close(ov_gradient(w_o, w_v, g_o, g_v), tangent, rtol=1e-12, atol=1e-12)
    # and it is not just one of the two terms
    assert (ov_gradient(w_o, w_v, g_o, g_v) - g_o @ w_v).abs().max() > 0.1


def test_ov_activations_are_computed_in_the_inputs_dtype_whatever_the_weights(captured):
    """Activations captured in bfloat16 from float64 weights (or float32 from float64): the result has x's dtype
    and is the float64 result to that dtype's precision."""
    cap, w_qkv, b_qkv, w_dense, _ = captured
    x = cap["x"]
    exact = ov_activations(x, w_qkv, b_qkv, w_dense, HEADS)
    for dtype, tol in ((torch.bfloat16, 0.05), (torch.float32, 1e-5)):
        got = ov_activations(x.to(dtype), w_qkv, b_qkv, w_dense, HEADS)
        assert got.dtype == dtype
        assert float((got.double() - exact).abs().max() / exact.abs().max()) < tol, dtype
