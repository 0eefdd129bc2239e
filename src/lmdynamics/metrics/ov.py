"""Per-head Q, K, V and OV circuits from GPT-NeoX's fused, head-interleaved QKV layout.

GPT-NeoX views the output of ``attention.query_key_value`` (weight (3 H dh, d), nn.Linear convention
out x in) as [heads, 3, d_head]: head h's query, key and value rows are ``h*3*dh + [0, dh)``,
``+ [dh, 2dh)`` and ``+ [2dh, 3dh)`` (transformers' ``GPTNeoXAttention.forward``: ``view(..., H, 3 dh)``
then ``chunk(3)``). It is not [Q; K; V] stacked: taking the last third of the matrix as "V" mixes the
q, k and v of the last heads. ``attention.dense`` (weight (d, H dh)) reads the heads' outputs
concatenated, so W_O^h = W_dense[:, h dh : (h+1) dh].

The attention output is then sum_h A_h (x W_V^h^T + b_V^h) W_O^h^T + b_O, and the OV circuit of head h is
the d x d matrix W_OV^h = W_O^h W_V^h (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits"), with bias b_OV^h = W_O^h b_V^h (passed through unchanged because attention rows sum to 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "HeadParams",
    "OVCircuits",
    "split_qkv",
    "split_dense",
    "ov_circuits",
    "ov_activations",
    "ov_singular_values",
    "ov_gradient",
]


class HeadParams(NamedTuple):
    """One of Q, K or V split by head: weight [heads, d_head, d], bias [heads, d_head] (or None)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


class OVCircuits(NamedTuple):
    """Per-head OV circuits: weight [heads, d, d] = W_O^h W_V^h, bias [heads, d] = W_O^h b_V^h (or None)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


def _head_dim(w_qkv: torch.Tensor, num_heads: int) -> int:
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if w_qkv.ndim != 2 or w_qkv.shape[0] % (3 * num_heads):
        raise ValueError(
            f"query_key_value weight of shape {tuple(w_qkv.shape)} does not split into 3 x {num_heads} heads; "
            "pass the (3 * hidden, hidden) weight of attention.query_key_value and config.num_attention_heads"
        )
    return w_qkv.shape[0] // (3 * num_heads)


def split_qkv(w_qkv: torch.Tensor, b_qkv: torch.Tensor | None, num_heads: int) -> tuple[HeadParams, HeadParams, HeadParams]:
    """Split a fused query_key_value layer into per-head (q, k, v), each ``HeadParams(weight, bias)``.

    weight: [heads, d_head, d] (row j of head h maps the input to that head's j-th coordinate), bias:
    [heads, d_head] or None when ``b_qkv`` is None. Views of the inputs, no copy::

        q, k, v = split_qkv(w_qkv, b_qkv, num_heads)
        v_h = x @ v.weight[h].T + v.bias[h]        # head h's value vectors, as GPTNeoXAttention computes them
    """
    dh = _head_dim(w_qkv, num_heads)
    w = w_qkv.reshape(num_heads, 3, dh, w_qkv.shape[1])
    if b_qkv is None:
        b = (None, None, None)
    else:
        if b_qkv.shape != (w_qkv.shape[0],):
            raise ValueError(f"query_key_value bias of shape {tuple(b_qkv.shape)} does not match weight {tuple(w_qkv.shape)}")
        bb = b_qkv.reshape(num_heads, 3, dh)
        b = (bb[:, 0], bb[:, 1], bb[:, 2])
    return tuple(HeadParams(w[:, i], b[i]) for i in range(3))  # type: ignore[return-value]


def split_dense(w_dense: torch.Tensor, num_heads: int) -> torch.Tensor:
    """W_O per head from ``attention.dense.weight`` (d, H dh): [heads, d, d_head], W_O^h = W[:, h dh:(h+1) dh]."""
    if w_dense.ndim != 2 or w_dense.shape[1] % num_heads:
        raise ValueError(
            f"attention.dense weight of shape {tuple(w_dense.shape)} does not split into {num_heads} heads along its input"
        )
    d, hd = w_dense.shape
    return w_dense.reshape(d, num_heads, hd // num_heads).permute(1, 0, 2)


def ov_circuits(w_qkv: torch.Tensor, b_qkv: torch.Tensor | None, w_dense: torch.Tensor, num_heads: int) -> OVCircuits:
    """Per-head OV circuits W_O^h W_V^h ([heads, d, d]) and biases W_O^h b_V^h ([heads, d]), in float64.

    Float64 keeps the d - d_head structurally zero singular values of each product at ~1e-16 instead of
    float32's ~1e-7 noise, which would otherwise add ~1e-3 to an effective rank.
    """
    _, _, v = split_qkv(w_qkv, b_qkv, num_heads)
    w_o = split_dense(w_dense, num_heads).to(torch.float64)
    if w_o.shape[-1] != v.weight.shape[1]:
        raise ValueError(f"dense weight {tuple(w_dense.shape)} and query_key_value weight {tuple(w_qkv.shape)} disagree on the head size")
    weight = w_o @ v.weight.to(torch.float64)
    bias = None if v.bias is None else (w_o @ v.bias.to(torch.float64).unsqueeze(-1)).squeeze(-1)
    return OVCircuits(weight, bias)


def ov_activations(x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor | None, w_dense: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-head OV activations [heads, ..., d]: (x W_V^h^T + b_V^h) W_O^h^T, the value vectors pushed
    through the output projection without the attention pattern (Tending Towards Stability, 2024).

    x is the attention input (after ``input_layernorm``), shape (..., d). The dense bias b_O is not
    added (it is one constant shift of the sum over heads). Computed in x's dtype.
    """
    _, _, v = split_qkv(w_qkv, b_qkv, num_heads)
    w_o = split_dense(w_dense, num_heads).to(x.dtype)
    vals = torch.einsum("...i,hji->h...j", x, v.weight.to(x.dtype))  # [H, ..., dh]
    if v.bias is not None:
        vals = vals + v.bias.to(x.dtype).view(num_heads, *([1] * (x.ndim - 1)), -1)
    return torch.einsum("h...j,hij->h...i", vals, w_o)


def ov_singular_values(w_qkv: torch.Tensor, w_dense: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Singular values of every head's W_O^h W_V^h, [heads, d], descending, float64, without forming d x d.

    With W_O^h = Q_O R_O and W_V^h^T = Q_V R_V (thin QR, Q orthonormal), W_O^h W_V^h = Q_O (R_O R_V^T) Q_V^T,
    so its nonzero singular values are those of the d_head x d_head matrix R_O R_V^T; the other d - d_head
    are exactly 0. Same numbers as ``singular_values(ov_circuits(...).weight)`` at a fraction of the cost.
    """
    from .spectrum import product_singular_values

    _, _, v = split_qkv(w_qkv, None, num_heads)
    return product_singular_values(split_dense(w_dense, num_heads), v.weight)  # [H, d, dh] @ [H, dh, d]


def ov_gradient(w_o_h: torch.Tensor, w_v_h: torch.Tensor, g_o_h: torch.Tensor, g_v_h: torch.Tensor) -> torch.Tensor:
    """Gradient of the OV circuit, G_O W_V + W_O G_V (product rule for W_O W_V; Tending Towards Stability, 2024).

    w_o_h, g_o_h: (..., d, d_head) weights of ``split_dense`` and their gradients (``split_dense`` of
    ``dense.weight.grad``); w_v_h, g_v_h: (..., d_head, d) (``split_qkv(...)[2].weight`` of the weight and
    of its gradient). Batched over leading head dims; float64 result.
    """
    f = torch.float64
    return g_o_h.to(f) @ w_v_h.to(f) + w_o_h.to(f) @ g_v_h.to(f)
