"""Anisotropy: the O(n d) form equals the O(n^2) definition; closed cases."""

import pytest
import torch
import torch.nn.functional as F

from lmdynamics.metrics import anisotropy


def pairwise_definition(h):
    """1/(n^2 - n) sum_{i != j} cos(h_i, h_j), with the full n x n cosine matrix (torch's convention)."""
    h = h.double()
    n = h.shape[0]
    cos = F.cosine_similarity(h[:, None, :], h[None, :, :], dim=-1)
    off = ~torch.eye(n, dtype=torch.bool)
    return float(cos[off].sum() / (n * n - n))


@pytest.mark.parametrize("n,d,shift", [(50, 8, 0.0), (200, 32, 1.5), (7, 300, -0.3), (2, 5, 0.0)])
def test_matches_pairwise_definition(n, d, shift):
    h = torch.randn(n, d, generator=torch.Generator().manual_seed(n)) + shift
    expected = pairwise_definition(h)
    assert anisotropy(h) == pytest.approx(expected, rel=1e-10, abs=1e-13)
    assert anisotropy(h.float()) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_zero_rows_follow_cosine_similarity_convention():
    h = torch.randn(30, 6, generator=torch.Generator().manual_seed(1)) + 0.5
    h[[3, 17]] = 0.0
    assert anisotropy(h) == pytest.approx(pairwise_definition(h), rel=1e-10)
    assert anisotropy(torch.zeros(4, 3)) == 0.0


def test_closed_forms():
    v = torch.randn(16, dtype=torch.float64)
    parallel = torch.linspace(0.1, 5.0, 40, dtype=torch.float64)[:, None] * v  # positive multiples
    assert anisotropy(parallel) == pytest.approx(1.0, abs=1e-12)
    assert anisotropy(torch.eye(10)) == pytest.approx(0.0, abs=1e-15)  # orthogonal rows
    # n/2 copies of v and n/2 of -v: cos = +1 within a group, -1 across -> -1/(n-1)
    n = 20
    pm = torch.cat([v.expand(n // 2, -1), -v.expand(n // 2, -1)])
    assert anisotropy(pm) == pytest.approx(-1 / (n - 1), rel=1e-12)


def test_invariant_to_rotation_and_row_scaling():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(64, 12, generator=g, dtype=torch.float64) + 0.7
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    scales = torch.rand(64, 1, generator=g, dtype=torch.float64) + 0.1
    assert anisotropy(h @ q * scales) == pytest.approx(anisotropy(h), rel=1e-10)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 rows"):
        anisotropy(torch.randn(1, 4))
    with pytest.raises(ValueError, match="2-D"):
        anisotropy(torch.randn(4))
