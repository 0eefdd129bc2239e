"""The shared measurement adapters: weight, gradient and activation rows for the tidy table."""

import math
import weakref

import pytest
import torch

from lmdynamics.checkpoints import iter_tensors
from lmdynamics.checkpoints.synthetic import tiny_config
from lmdynamics.measure import (
    activation_metric_rows,
    anisotropy_rows,
    classify_weight,
    gradient_metric_rows,
    product_singular_values,
    tag_rows,
    weight_metric_rows,
)

L, H, D, V = 2, 4, 32, 128
DH = D // H


@pytest.fixture(scope="module")
def model():
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(tiny_config())


def keyed(rows):
    out = {}
    for r in rows:
        key = (r["layer"], r["component"], r["metric"]) + ((r["index"],) if "index" in r else ())
        assert key not in out, f"duplicate row {key}"
        out[key] = r["value"]
    return out


# ---- independent float64 references (no lmdynamics code) ----
def ref_spectrum(w):
    return torch.linalg.svdvals(w.detach().double())


def ref_er(s):
    p = s / s.sum()
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def ref_ov(w_qkv, w_dense, h):
    """W_O^h W_V^h by explicit index arithmetic on the fused layout: head h's value rows are
    h*3*dh + [2dh, 3dh) of W_qkv (docs/science.md sec. 1), its W_O columns h*dh + [0, dh)."""
    rows = torch.arange(h * 3 * DH + 2 * DH, h * 3 * DH + 3 * DH)
    w_v = w_qkv.detach().double()[rows]  # dh x d
    w_o = w_dense.detach().double()[:, h * DH : (h + 1) * DH]  # d x dh
    return w_o @ w_v


def test_classify_weight_names():
    assert classify_weight("gpt_neox.layers.3.mlp.dense_h_to_4h.weight") == (3, "mlp_in")
    assert classify_weight("model.gpt_neox.layers.10.attention.query_key_value.weight") == (10, "qkv")
    assert classify_weight("layers.0.attention.dense.weight") == (0, "dense")
    assert classify_weight("module._forward_module.model.gpt_neox.layers.1.mlp.dense_4h_to_h.weight") == (1, "mlp_out")
    assert classify_weight("gpt_neox.embed_in.weight") == (-1, "embed_in")
    assert classify_weight("embed_out.weight") == classify_weight("model.lm_head.weight") == (-1, "head")
    for skipped in ("gpt_neox.layers.0.attention.dense.bias", "gpt_neox.final_layer_norm.weight",
                    "gpt_neox.layers.0.input_layernorm.weight"):
        assert classify_weight(skipped) is None


def test_weight_rows_match_float64_references(model):
    rows = keyed(weight_metric_rows(model.named_parameters(), num_heads=H, spectrum=True))
    sd = dict(model.named_parameters())
    mats = {"qkv": "attention.query_key_value", "dense": "attention.dense", "mlp_in": "mlp.dense_h_to_4h",
            "mlp_out": "mlp.dense_4h_to_h"}
    for layer in range(L):
        for comp, mod in mats.items():
            s = ref_spectrum(sd[f"gpt_neox.layers.{layer}.{mod}.weight"])
            assert rows[(layer, comp, "er")] == pytest.approx(ref_er(s), rel=1e-9)
            assert rows[(layer, comp, "per")] == pytest.approx(ref_er(s) / s.numel(), rel=1e-9)
            assert rows[(layer, comp, "stable_rank")] == pytest.approx(float((s**2).sum() / s[0] ** 2), rel=1e-9)
            assert rows[(layer, comp, "condition_number")] == pytest.approx(float(s[0] / s[-1]), rel=1e-6)
        qkv, dense = sd[f"gpt_neox.layers.{layer}.attention.query_key_value.weight"], sd[f"gpt_neox.layers.{layer}.attention.dense.weight"]
        for h in range(H):
            s = ref_spectrum(ref_ov(qkv, dense, h))[:DH]  # rank <= d_head; the rest are float noise around 0
            s = torch.cat([s, torch.zeros(D - DH, dtype=torch.float64)])
            assert rows[(layer, f"ov_head{h:02d}", "er")] == pytest.approx(ref_er(s), rel=1e-9)
            assert rows[(layer, f"ov_head{h:02d}", "per")] == pytest.approx(ref_er(s) / D, rel=1e-9)  # r = min(m, n) = d
            assert rows[(layer, f"ov_head{h:02d}", "stable_rank")] == pytest.approx(float((s**2).sum() / s[0] ** 2), rel=1e-9)
            assert rows[(layer, f"ov_head{h:02d}", "condition_number")] == math.inf  # rank-deficient d x d product
    s = ref_spectrum(sd["lm_head.weight"])
    p = s / s.sum()
    assert rows[(-1, "head", "kl_uniform")] == pytest.approx(math.log(s.numel()) + float((p * p.log()).sum()), rel=1e-9)
    assert rows[(-1, "embed_in", "er")] == pytest.approx(ref_er(ref_spectrum(sd["gpt_neox.embed_in.weight"])), rel=1e-9)
    assert not any(k[2] == "kl_uniform" for k in rows if k[1] != "head")
    spectrum = sorted((k[3], v) for k, v in rows.items() if k[2] == "sv_norm")
    assert [i for i, _ in spectrum] == list(range(min(V, D))) and all(k[:2] == (-1, "head") for k in rows if k[2] == "sv_norm")
    assert torch.allclose(torch.tensor([v for _, v in spectrum], dtype=torch.float64), s / s[0], rtol=1e-9)


def test_product_singular_values_of_low_rank_products():
    torch.manual_seed(1)
    a, b = torch.randn(40, 5), torch.randn(5, 30)
    s = product_singular_values(a, b)
    ref = ref_spectrum(a.double() @ b.double())
    assert s.shape == (30,) and torch.allclose(s[:5], ref[:5], rtol=1e-10) and (s[5:] == 0).all()
    big = product_singular_values(torch.randn(6, 8), torch.randn(8, 7))  # k >= min(m, n): plain product
    assert big.shape == (6,)


def test_live_parameters_equal_the_streamed_checkpoint_under_both_head_names(model, tmp_path):
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path / "a")
    live = keyed(weight_metric_rows(model.named_parameters(), num_heads=H, spectrum=True))
    streamed = keyed(weight_metric_rows(iter_tensors(tmp_path / "a"), num_heads=H, spectrum=True))
    assert live.keys() == streamed.keys()
    assert all(live[k] == streamed[k] or (math.isinf(live[k]) and math.isinf(streamed[k])) for k in live)
    # the same tensors under lm_head (transformers 5) and a "model." prefix (a wrapper's names)
    state = load_file(str(tmp_path / "a" / "model.safetensors"))
    renamed = {("lm_head.weight" if k == "embed_out.weight" else "model." + k): v for k, v in state.items()}
    (tmp_path / "b").mkdir()
    save_file(renamed, str(tmp_path / "b" / "model.safetensors"))
    other = keyed(weight_metric_rows(iter_tensors(tmp_path / "b"), num_heads=H, spectrum=True))
    assert other.keys() == live.keys() and all(other[k] == streamed[k] or math.isinf(other[k]) for k in other)


def test_one_singular_value_computation_per_matrix(model, monkeypatch):
    import lmdynamics.metrics as mt

    calls = {"sv": [], "ov": 0}
    real_sv, real_ov = mt.singular_values, mt.ov_singular_values
    monkeypatch.setattr(mt, "singular_values", lambda w, *a, **k: calls["sv"].append(tuple(w.shape)) or real_sv(w, *a, **k))

    def counting_ov(*a, **k):
        calls["ov"] += 1
        return real_ov(*a, **k)

    monkeypatch.setattr(mt, "ov_singular_values", counting_ov)
    weight_metric_rows(model.named_parameters(), num_heads=H, spectrum=True)
    # 4 matrices per layer, the embedding and the head; all heads' OV spectra of a layer in one call
    assert len(calls["sv"]) == L * 4 + 2 and calls["ov"] == L


def test_streaming_keeps_only_what_ov_needs(model):
    """Every tensor except a layer's pending qkv/dense must be released once the next one is requested."""
    refs = []

    def stream():
        for name, p in model.state_dict().items():
            alive = [(n, r) for n, r in refs if r() is not None]
            pending = [n for n, _ in alive if n.endswith(("query_key_value.weight", "attention.dense.weight"))]
            others = [n for n, _ in alive if n not in pending]
            assert not others, f"still held: {others}"
            assert len(pending) <= 1
            t = p.clone()
            refs.append((name, weakref.ref(t)))
            yield name, t
            del t

    rows = weight_metric_rows(stream(), num_heads=H)
    assert len({r["component"] for r in rows}) == 4 + H + 2


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="ZeRO-3"):
        weight_metric_rows([("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", torch.empty(0))], num_heads=H)
    qkv = dict(model.named_parameters())["gpt_neox.layers.0.attention.query_key_value.weight"]
    with pytest.raises(ValueError, match="missing"):
        weight_metric_rows([("gpt_neox.layers.0.attention.query_key_value.weight", qkv)], num_heads=H)


def test_gradient_rows_and_the_ov_product_rule(model):
    model.zero_grad()
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(0))
    model(ids, labels=ids).loss.backward()
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    rows = keyed(gradient_metric_rows(grads, model.named_parameters(), num_heads=H))
    assert rows and all(k[2].startswith("grad_") for k in rows)
    sd = dict(model.named_parameters())
    g_mlp = sd["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"].grad
    assert rows[(1, "mlp_out", "grad_er")] == pytest.approx(ref_er(ref_spectrum(g_mlp)), rel=1e-9)
    for layer in range(L):
        qkv, dense = sd[f"gpt_neox.layers.{layer}.attention.query_key_value.weight"], sd[f"gpt_neox.layers.{layer}.attention.dense.weight"]
        for h in range(H):
            # d(W_O W_V) = G_O W_V + W_O G_V, built by explicit indices
            rows_v = torch.arange(h * 3 * DH + 2 * DH, h * 3 * DH + 3 * DH)
            cols = slice(h * DH, (h + 1) * DH)
            w_v, g_v = qkv.detach().double()[rows_v], qkv.grad.double()[rows_v]
            w_o, g_o = dense.detach().double()[:, cols], dense.grad.double()[:, cols]
            s = ref_spectrum(g_o @ w_v + w_o @ g_v)[: 2 * DH]
            s = torch.cat([s, torch.zeros(D - 2 * DH, dtype=torch.float64)])
            assert rows[(layer, f"ov_head{h:02d}", "grad_er")] == pytest.approx(ref_er(s), rel=1e-8)
    assert (-1, "head", "grad_kl_uniform") in rows
    model.zero_grad()


def test_activation_rows():
    torch.manual_seed(2)
    x = torch.randn(50, 16)
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    acts = {(0, "mlp"): x, (-1, "final"): torch.randn(50, 8), (1, "attn"): torch.randn(50, 4)}
    rotated = {(0, "mlp"): 3.0 * x @ q + 1.5, (-1, "final"): acts[(-1, "final")], (2, "resid"): torch.randn(50, 4)}
    rows = activation_metric_rows(acts, rotated, metric="cka_final")
    assert {(r["layer"], r["component"]) for r in rows} == {(0, "mlp"), (-1, "final")}  # the shared keys
    assert all(r["metric"] == "cka_final" and r["value"] == pytest.approx(1.0, abs=1e-9) for r in rows)
    noise = activation_metric_rows({(0, "mlp"): x}, {(0, "mlp"): torch.randn(50, 16)}, metric="cka_prev", debiased=True)
    assert noise[0]["metric"] == "cka_prev_debiased" and abs(noise[0]["value"]) < 0.2
    with pytest.raises(ValueError, match="same probe"):
        activation_metric_rows({(0, "mlp"): x}, {(0, "mlp"): x[:10]})
    with pytest.raises(ValueError, match="share no"):
        activation_metric_rows({(0, "mlp"): x}, {(1, "mlp"): x})
    parallel = torch.randn(1, 8).abs() * torch.arange(1, 21, dtype=torch.float32)[:, None]
    an = anisotropy_rows({(3, "resid"): parallel, (-1, "final"): torch.eye(6)})
    got = {(r["layer"], r["component"]): r["value"] for r in an}
    assert got[(3, "resid")] == pytest.approx(1.0, abs=1e-9) and got[(-1, "final")] == pytest.approx(0.0, abs=1e-9)
    assert all(r["metric"] == "anisotropy" for r in an)
    tagged = tag_rows(an, "run", "m", 5, 640)
    assert all(set(t) == {"run", "model", "step", "tokens", "layer", "component", "metric", "value"} for t in tagged)
