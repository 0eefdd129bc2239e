"""Anisotropy of a set of representations: mean cosine similarity over distinct pairs of rows.

A(H) = 1/(n^2 - n) * sum_{i != j} cos(h_i, h_j) (Ethayarajh 2019; Godey et al. 2024, sec. 3), computed in
O(n d) time and memory: with u_i = h_i / ||h_i||, sum_{i != j} u_i.u_j = ||sum_i u_i||^2 - sum_i ||u_i||^2.
"""

from __future__ import annotations

import torch

__all__ = ["anisotropy"]


def anisotropy(h) -> float:
    """Mean pairwise cosine similarity of the rows of h (n, d), n >= 2, in float64; never forms n x n.

    A zero row has cosine 0 with every row (the convention of ``torch.nn.functional.cosine_similarity``
    and scikit-learn) and still counts in the n^2 - n pairs. Rows with NaN/inf give NaN.
    """
    h = torch.as_tensor(h)
    if h.ndim != 2:
        raise ValueError(f"anisotropy needs a 2-D matrix of representations (n, d), got shape {tuple(h.shape)}")
    n = h.shape[0]
    if n < 2:
        raise ValueError(f"anisotropy needs at least 2 rows (pairs of representations), got {n}")
    h = h.to(torch.float64)
    norms = torch.linalg.vector_norm(h, dim=1, keepdim=True)
    nonzero = norms > 0
    u = torch.where(nonzero, h / torch.where(nonzero, norms, 1.0), 0.0)
    total = u.sum(0)
    self_terms = (u * u).sum()  # = number of nonzero rows, up to rounding
    return float(((total @ total) - self_terms) / (n * (n - 1)))
