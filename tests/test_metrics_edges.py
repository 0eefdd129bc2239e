"""Edges of the metric functions that the closed-form tests leave open: mixed and low precision inputs,
the smallest valid sizes, unequal batches, non-finite input, bad arguments."""

import numpy as np
import pytest
import torch

from lmdynamics.metrics import (
    MinibatchCKA,
    StreamingLinearCKA,
    condition_number,
    linear_cka,
    ov_activations,
    ov_circuits,
    ov_gradient,
    product_singular_values,
    split_dense,
    w_error,
)
from tests.test_metrics_cka import correlated, np_hsic1


def gaussian(seed, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def test_minibatch_cka_weighs_unequal_batches_by_their_own_normalisation():
    x, y = correlated(94, 6, 5, seed=3)
    metric, hsic = MinibatchCKA(), np.zeros(3)
    for xb, yb in zip(x.split([4, 50, 40]), y.split([4, 50, 40])):  # the smallest batch (4 rows) included
        metric.update(xb.float(), yb.float())
        k, l = xb.float().double().numpy() @ xb.float().double().numpy().T, yb.float().double().numpy() @ yb.float().double().numpy().T
        hsic += [np_hsic1(k, l), np_hsic1(k, k), np_hsic1(l, l)]
    # float32 batches are read in float64: the match is to float64 precision
    assert float(metric.compute()) == pytest.approx(hsic[0] / np.sqrt(hsic[1] * hsic[2]), rel=1e-12)


def test_product_singular_values_precision_and_nonfinite():
    a, b = gaussian(1, 3, 7, 2, dtype=torch.float32), gaussian(2, 3, 2, 5, dtype=torch.float32)  # k < min(m, n)
    reference = torch.linalg.svdvals(a.double() @ b.double())
    s = product_singular_values(a, b)
    assert s.dtype == torch.float64 and s.shape == (3, 5)
    torch.testing.assert_close(s[:, :2], reference[:, :2], rtol=1e-12, atol=1e-12)
    assert (s[:, 2:] == 0).all()
    wide = product_singular_values(gaussian(3, 4, 6, dtype=torch.float32), gaussian(4, 6, 3, dtype=torch.float32))
    torch.testing.assert_close(wide, torch.linalg.svdvals(gaussian(3, 4, 6, dtype=torch.float32).double()
                                                          @ gaussian(4, 6, 3, dtype=torch.float32).double()),
                               rtol=1e-12, atol=1e-12)
    for bad in ("a", "b"):
        x, y = gaussian(5, 2, 7, 2), gaussian(6, 2, 2, 5)
        (x if bad == "a" else y)[1, 0, 0] = float("inf")
        out = product_singular_values(x, y)
        assert out.shape == (2, 5) and out.dtype == torch.float64 and torch.isnan(out).all()


def test_w_error_batched_and_bad_ranks():
    w = gaussian(7, 3, 5, 4)
    got = w_error(w, 1)
    assert isinstance(got, torch.Tensor) and got.shape == (3,)
    for i in range(3):
        s = torch.linalg.svdvals(w[i])
        assert float(got[i]) == pytest.approx(float(s[1:].norm() / s.norm()), rel=1e-12)
    for d in (1.5, True, "2", -1):
        with pytest.raises(ValueError, match="non-negative int"):
            w_error(w[0], d)
    assert w_error(w[0], np.int64(0)) == pytest.approx(1.0)


def reference_ov(w_qkv, b_qkv, w_dense, heads):
    """W_O^h W_V^h and W_O^h b_V^h from the documented layout, in float64 with explicit slices."""
    dh = w_qkv.shape[0] // (3 * heads)
    w_qkv, b_qkv, w_dense = w_qkv.double(), b_qkv.double(), w_dense.double()
    weights, biases = [], []
    for h in range(heads):
        rows = slice(h * 3 * dh + 2 * dh, h * 3 * dh + 3 * dh)
        w_o = w_dense[:, h * dh:(h + 1) * dh]
        weights.append(w_o @ w_qkv[rows])
        biases.append(w_o @ b_qkv[rows])
    return torch.stack(weights), torch.stack(biases)


@pytest.mark.parametrize("heads, d_head, d", [(1, 4, 4), (2, 3, 6), (3, 2, 5)])
def test_ov_circuits_of_float32_weights_and_odd_head_sizes(heads, d_head, d):
    w_qkv, b_qkv = gaussian(8, 3 * heads * d_head, d, dtype=torch.float32), gaussian(9, 3 * heads * d_head, dtype=torch.float32)
    w_dense = gaussian(10, d, heads * d_head, dtype=torch.float32)
    weight, bias = ov_circuits(w_qkv, b_qkv, w_dense, heads)
    ref_w, ref_b = reference_ov(w_qkv, b_qkv, w_dense, heads)
    assert weight.dtype == bias.dtype == torch.float64
    torch.testing.assert_close(weight, ref_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bias, ref_b, rtol=1e-12, atol=1e-12)
    x = gaussian(11, 5, d)  # float64 activations through float32 weights: computed in x's dtype
    acts = ov_activations(x, w_qkv, b_qkv, w_dense, heads)
    assert acts.dtype == torch.float64 and acts.shape == (heads, 5, d)
    torch.testing.assert_close(acts, x @ ref_w.mT + ref_b[:, None], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rows, heads", [(6, 4), (12, 0), (12, 2.0)])
def test_qkv_that_does_not_split_into_heads_is_refused(rows, heads):
    with pytest.raises(ValueError):
        ov_circuits(gaussian(1, rows, 4), None, gaussian(2, 4, 4), heads)


def test_dense_that_does_not_split_into_heads_is_refused():
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        split_dense(gaussian(1, 4, 4), 3)
    with pytest.raises(ValueError, match="does not split"):
        split_dense(gaussian(1, 12), 3)


def test_stacks_of_matrices_give_one_value_per_matrix():
    w = gaussian(12, 2, 3, 6, 4)  # a 2 x 3 stack of 6 x 4 matrices
    s = torch.linalg.svdvals(w)
    cond = condition_number(w)
    assert isinstance(cond, torch.Tensor) and cond.shape == (2, 3)
    torch.testing.assert_close(cond, s[..., 0] / s[..., -1], rtol=1e-10, atol=0)
    a, b = gaussian(13, 2, 3, 7, 2), gaussian(14, 2, 3, 2, 5)  # doubly batched low-rank products
    prod = product_singular_values(a, b)
    assert prod.shape == (2, 3, 5) and (prod[..., 2:] == 0).all()
    torch.testing.assert_close(prod[..., :2], torch.linalg.svdvals(a @ b)[..., :2], rtol=1e-10, atol=1e-12)


def test_ov_gradient_of_float32_tensors_is_float64():
    w_o, w_v, g_o, g_v = (gaussian(20 + i, 2, *shape, dtype=torch.float32) for i, shape in
                          enumerate([(6, 3), (3, 6), (6, 3), (3, 6)]))
    got = ov_gradient(w_o, w_v, g_o, g_v)
    assert got.dtype == torch.float64
    reference = g_o.double() @ w_v.double() + w_o.double() @ g_v.double()
    torch.testing.assert_close(got, reference, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("debiased, fewest", [(False, 2), (True, 4)])
def test_streaming_cka_needs_its_fewest_rows(debiased, fewest):
    x, y = correlated(fewest, 3, 2, seed=5)
    metric = StreamingLinearCKA(debiased=debiased)
    metric.update(x[: fewest - 1], y[: fewest - 1])
    with pytest.raises(ValueError, match=f"needs at least {fewest}"):
        metric.compute()
    metric.update(x[fewest - 1:], y[fewest - 1:])
    assert float(metric.compute()) == pytest.approx(linear_cka(x, y, debiased=debiased), rel=1e-9)
