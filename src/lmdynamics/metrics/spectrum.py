"""Singular values and the rank / spectrum measures built on them.

Every measure accepts either a matrix (2-D; a stack of matrices ``(..., m, n)`` gives one value per matrix)
or its precomputed singular values (1-D), so one decomposition serves all of them::

    s = singular_values(w)
    er, per, kl = effective_rank(s), proportional_effective_rank(s), singular_entropy_kl_uniform(s)

Conventions: natural logarithms; a spectrum of an m x n matrix has r = min(m, n) values (zeros included);
an all-zero matrix (or spectrum) gives NaN for every measure, because each of them divides by a norm of W.

Accuracy of ``singular_values`` (what "relative error" means here). The reference is
``torch.linalg.svdvals`` of the matrix in float64. The promise, for every singular value s_i (tested on
random, decaying, rank-deficient and ill-conditioned matrices; the Gram path's error model behind it is
calibrated, see ``_gram_error``):
``|s_i - ref_i| <= 1e-6 * ref_i`` (per-value relative error) whenever ``ref_i >= 1e-9 * s_max``, and
``|s_i - ref_i| <= 1e-6 * s_max`` for all values. Below ``1e-9 * s_max`` (numerically zero singular
values of rank-deficient matrices) no float64 method, the reference included, resolves a value relative
to itself: float64 SVD is only accurate to about 1e-16 * s_max there.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Literal

import torch

__all__ = [
    "singular_values",
    "product_singular_values",
    "effective_rank",
    "proportional_effective_rank",
    "stable_rank",
    "condition_number",
    "gini",
    "singular_entropy_kl_uniform",
    "w_error",
]

_EPS64 = torch.finfo(torch.float64).eps
# Largest per-value relative error we let the Gram path commit, as estimated below (10x below the 1e-6 promise).
_GRAM_RTOL = 1e-7
# Size (in float64 elements) of the row chunk converted at a time for a big matrix (4 MB): the peak memory of
# singular_values stays near the input itself (a 50304 x 512 head never gets a float64 copy), and small
# chunks stay in cache (faster than big ones).
_CHUNK_ELEMENTS = 1 << 19
_BLOCK = 64
# Eigen-, QR and SV decompositions of matrices narrower than this run on one CPU thread (see _serial_lapack).
_SERIAL_BELOW = 1024


@contextlib.contextmanager
def _serial_lapack(w: torch.Tensor):
    """One CPU thread for a LAPACK decomposition of a matrix narrower than ``_SERIAL_BELOW``.

    Multi-threaded LAPACK on such matrices is many small OpenMP regions; each one wakes the worker threads,
    which with passive waiting (OMP_WAIT_POLICY=PASSIVE, or on a busy machine) costs more than the work.
    Measured on 2 cores, passive waiting: eigvalsh 128 x 128 10.5 ms on 2 threads vs 0.8 ms on 1,
    512 x 512 99 vs 21 ms; spinning threads: equal within 10%. Matrix products keep all threads.
    """
    threads = torch.get_num_threads()
    if w.device.type != "cpu" or threads == 1 or min(w.shape[-2:]) >= _SERIAL_BELOW:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _gram(w: torch.Tensor) -> torch.Tensor:
    """W^T W in float64 for w (..., m, n), m >= n; only the upper triangle is guaranteed to be filled.

    Products of float32 (or lower) entries are exact in float64, so the only error is float64 summation.
    Big 2-D inputs are converted a chunk of rows at a time (no full float64 copy) and only the upper
    block triangle is multiplied (60-75% of the flops of a full product).
    """
    if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:
        a = w.to(torch.float64)
        return a.mT @ a
    m, n = w.shape
    g = torch.zeros(n, n, dtype=torch.float64, device=w.device)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, m, rows):
        c = w[start : start + rows].to(torch.float64)
        if n <= _BLOCK:
            g.addmm_(c.mT, c)
            continue
        for i in range(0, n, _BLOCK):
            g[i : i + _BLOCK, i:].addmm_(c[:, i : i + _BLOCK].mT, c[:, i:])
    return g


def _gram_error(lam_max: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """Bound used for the absolute error of the Gram eigenvalues: 4 eps lambda_max (sqrt(m) + sqrt(k)).

    Float64 summation of m exact products errs by about sqrt(m) eps |G| (random rounding), the symmetric
    eigensolver by about eps |G|. Calibrated on {20000, 4096, 512} x {64, 128, 512} and 100 x 3000 matrices
    with log-spaced, two-level and mean-shifted spectra (condition 1e2..5e3): the smallest eigenvalue's
    error reached 0.6x the unscaled estimate (flat spectrum with one small value), 0.01-0.1x otherwise;
    the factor 4 is the margin on top.
    """
    return 4 * _EPS64 * lam_max * (math.sqrt(m) + math.sqrt(k))


def singular_values(w: torch.Tensor, *, method: Literal["auto", "gram", "svd"] = "auto") -> torch.Tensor:
    """Singular values of w (m, n) or of a stack (..., m, n), descending, float64, min(m, n) of them.

    ``auto`` (default) takes the eigenvalues of the small float64 Gram matrix (W^T W or W W^T), which
    costs one rank-k update instead of an SVD, and keeps them only where they are provably accurate:
    a Gram eigenvalue lambda carries an absolute error delta (see ``_gram_error``), so sqrt(lambda) has a
    relative error of about delta / (2 lambda). If that exceeds 1e-7 for the smallest value (condition
    number above ~1000 for a 50304 x 512 matrix, rank deficiency, exact zeros), the matrix goes to
    float64 ``torch.linalg.svdvals`` instead (big tall matrices after a chunked QR, see ``_svdvals64``).
    ``gram`` / ``svd`` force one path (``gram`` without the
    check: small singular values of ill-conditioned matrices then lose their relative accuracy).
    Accuracy promise: see the module docstring. Non-finite matrices give NaN values.
    """
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    if w.ndim < 2:
        raise ValueError(
            f"singular_values needs a matrix (..., m, n), got shape {tuple(w.shape)}; "
            "pass 1-D singular values directly to effective_rank & co."
        )
    if w.is_complex():
        raise ValueError("singular_values handles real matrices only; pass w.abs() or the real part")
    if method not in ("auto", "gram", "svd"):
        raise ValueError(f"singular_values: method must be 'auto', 'gram' or 'svd', got {method!r}")
    m, n = w.shape[-2:]
    k = min(m, n)
    batch = w.shape[:-2]
    if k == 0:
        return torch.zeros(*batch, 0, dtype=torch.float64, device=w.device)
    # batch-shaped; max and min propagate NaN and reach +-inf, and unlike isfinite(w) (or a float64 sum,
    # which converts w first) they allocate no matrix-sized temporary
    finite = torch.isfinite(w.amax(dim=(-2, -1))) & torch.isfinite(w.amin(dim=(-2, -1)))
    if not bool(finite.all()):
        out = torch.full((*batch, k), float("nan"), dtype=torch.float64, device=w.device)
        if finite.any():
            out[finite] = singular_values(w[finite], method=method)
        return out
    if method == "svd":
        return _svdvals64(w)

    s, _ = _gram_values(w, check=method == "auto")
    return s


def _svdvals64(w: torch.Tensor) -> torch.Tensor:
    """float64 ``svdvals``; a big tall (or wide) 2-D matrix is first reduced to its n x n triangular factor R
    by a chunked QR (TSQR: R of [R_prev; next rows], Demmel et al. 2012), which has the same singular values
    (W = QR, Q orthonormal) and is backward stable like the SVD's own bidiagonalisation, without a float64
    copy of W or LAPACK's m x n workspace."""
    m, n = w.shape[-2:]
    if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):
        with _serial_lapack(w):
            return torch.linalg.svdvals(w.to(torch.float64))
    tall = w if m >= n else w.mT
    m, k = tall.shape
    # 4k-row chunks (LAPACK's QR is slow on short blocks) but at most 1/8 of the matrix, so the chunk and the
    # QR's copies stay below the input's own size (50304 x 512: 1.4 s, +60 MB; full float64 SVD: 1.2 s, +300 MB)
    rows = max(k, min(4 * k, m // 8))
    r = torch.zeros(0, k, dtype=torch.float64, device=w.device)
    for start in range(0, tall.shape[0], rows):
        chunk = tall[start : start + rows].to(torch.float64)
        with _serial_lapack(chunk):
            r = torch.linalg.qr(torch.cat([r, chunk]), mode="r").R
    with _serial_lapack(r):
        return torch.linalg.svdvals(r)


def _gram_values(w: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values, batch-shaped bool: True where the Gram eigenvalues were kept, False where the
    float64 SVD replaced them). Finite, non-empty real input."""
    m, n = w.shape[-2:]
    tall = w if m >= n else w.mT
    gram = _gram(tall)
    with _serial_lapack(gram):
        lam = torch.linalg.eigvalsh(gram, UPLO="U").flip(-1)  # descending
    s = lam.clamp_min(0).sqrt()
    if not check:
        return s, torch.ones(w.shape[:-2], dtype=torch.bool, device=w.device)
    lam_max, lam_min = lam[..., 0], lam[..., -1]
    delta = _gram_error(lam_max, max(m, n), min(m, n))
    ok = (lam_max == 0) | ((lam_min > 0) & (delta <= 2 * _GRAM_RTOL * lam_min))
    if lam_max.ndim == 0:
        return (s if bool(ok) else _svdvals64(w)), ok
    redo = ~ok
    if redo.any():
        with _serial_lapack(w):
            s[redo] = torch.linalg.svdvals(w[redo].to(torch.float64))
    return s, ok


# ----------------------------------------------------------------------------------------------------
# measures on a spectrum


def _spectrum(w_or_s: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """Singular values (..., k) descending in float64, and whether the caller gave a stack (-> tensor out)."""
    if not isinstance(w_or_s, torch.Tensor):
        w_or_s = torch.as_tensor(w_or_s)
    if w_or_s.ndim == 0:
        raise ValueError(f"{name} needs a matrix (2-D) or its singular values (1-D), got a scalar")
    if w_or_s.ndim >= 2:
        s = singular_values(w_or_s)
        if s.shape[-1] == 0:
            raise ValueError(f"{name}: the matrix has a zero dimension {tuple(w_or_s.shape)}, so no singular values")
        return s, w_or_s.ndim > 2
    s = w_or_s.to(torch.float64)
    if s.numel() == 0:
        raise ValueError(f"{name}: the spectrum is empty (a matrix with a zero dimension has no singular values)")
    if bool((s < 0).any()):
        raise ValueError(f"{name}: singular values must be non-negative; did you pass eigenvalues or a 1-D vector?")
    return torch.sort(s, descending=True).values, False


def _out(value: torch.Tensor, batched: bool):
    return value if batched else float(value)


def _entropy(s: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of p = s / sum(s); NaN for an all-zero spectrum."""
    total = s.sum(-1, keepdim=True)
    p = s / total  # 0/0 -> NaN for a zero spectrum, which propagates
    return -torch.xlogy(p, p).sum(-1)


def effective_rank(w_or_s) -> float | torch.Tensor:
    """Effective rank exp(H(p)), p = s / sum(s), natural log (Roy & Vetterli 2007, eq. 3-4).

    1 for a rank-1 matrix, n for an n x n identity; zero singular values contribute 0 (0 log 0 = 0).
    """
    s, batched = _spectrum(w_or_s, "effective_rank")
    return _out(torch.exp(_entropy(s)), batched)


def proportional_effective_rank(w_or_s, rank: int | None = None) -> float | torch.Tensor:
    """Effective rank / min(m, n), in (0, 1] (Tending Towards Stability, 2024; we divide by the matrix's own r).

    For a 1-D input r is the number of values given, so pass all min(m, n) singular values, zeros included.
    ``rank``: divide by this attainable rank instead, the largest rank the matrix can have by construction
    (an OV circuit W_O^h W_V^h is d x d but of rank <= d_head), so that a flat spectrum over what it can reach is 1.
    """
    s, batched = _spectrum(w_or_s, "proportional_effective_rank")
    r = s.shape[-1] if rank is None else int(rank)
    if not 0 < r <= s.shape[-1]:
        raise ValueError(f"attainable rank {rank} must be in [1, {s.shape[-1]}] (the number of singular values)")
    return _out(torch.exp(_entropy(s)) / r, batched)


def stable_rank(w_or_s) -> float | torch.Tensor:
    """Stable rank ||W||_F^2 / ||W||_2^2 = sum(s^2) / s_max^2 (Rudelson & Vershynin 2007)."""
    s, batched = _spectrum(w_or_s, "stable_rank")
    return _out((s**2).sum(-1) / s[..., 0] ** 2, batched)


def condition_number(w_or_s) -> float | torch.Tensor:
    """s_max / s_min over the min(m, n) singular values; inf for a rank-deficient (nonzero) matrix."""
    s, batched = _spectrum(w_or_s, "condition_number")
    return _out(s[..., 0] / s[..., -1], batched)


def gini(w_or_s) -> float | torch.Tensor:
    """Gini coefficient of the singular values, sum_ij |s_i - s_j| / (2 n sum(s)) (Hurley & Rickard 2009, a
    sparsity measure): 0 for a flat spectrum, (n - 1) / n for rank 1. Computed from the sorted values as
    2 sum_i i s_(i) / (n sum(s)) - (n + 1) / n, s_(i) ascending, i = 1..n."""
    s, batched = _spectrum(w_or_s, "gini")
    n = s.shape[-1]
    rank = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    return _out(2 * (rank * s.flip(-1)).sum(-1) / (n * s.sum(-1)) - (n + 1) / n, batched)


def singular_entropy_kl_uniform(s) -> float | torch.Tensor:
    """KL(p || uniform) = ln(r) - H(p), p = s / sum(s) over the r = min(m, n) values (Godey et al. 2024).

    s: singular values (1-D) or a matrix. The paper does not spell out its normalisation; we use
    s / sum(s) and natural logs. 0 for a flat spectrum, ln(r) for rank 1.
    """
    s, batched = _spectrum(s, "singular_entropy_kl_uniform")
    return _out(math.log(s.shape[-1]) - _entropy(s), batched)


def w_error(s, d: int) -> float | torch.Tensor:
    """||s_{d+1:}||_2 / ||s||_2: relative Frobenius error of the best rank-d approximation (Eckart-Young;
    Godey et al. 2024, "W-error"). s: singular values (1-D) or a matrix. 1-based s_{d+1:} = the values
    after the d largest; 0 for d >= r.
    """
    try:
        if isinstance(d, bool):
            raise TypeError
        d = operator.index(d)
    except TypeError:
        d = -1
    if d < 0:
        raise ValueError("w_error: d must be a non-negative int (the approximation rank)")
    s, batched = _spectrum(s, "w_error")
    sq = s**2
    return _out(torch.sqrt(sq[..., d:].sum(-1) / sq.sum(-1)), batched)


def product_singular_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Singular values of ``a @ b`` (a: (..., m, k), b: (..., k, n)): float64, descending, min(m, n) of them.

    When k < min(m, n) the product is never formed: with thin QR a = Q_a R_a and b^T = Q_b R_b,
    a b = Q_a (R_a R_b^T) Q_b^T, so its nonzero singular values are those of the k x k core R_a R_b^T and
    the other min(m, n) - k are exactly 0 (used for OV circuits W_O^h W_V^h and their gradients).
    Non-finite input gives NaN.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    m, k = a.shape[-2:]
    r = min(m, b.shape[-1])
    if not (torch.isfinite(a.sum()) and torch.isfinite(b.sum())):  # e.g. a diverged run
        return torch.full((*a.shape[:-2], r), float("nan"), dtype=torch.float64)
    if k >= r:
        return singular_values(a @ b)
    with _serial_lapack(a):
        r_a = torch.linalg.qr(a, mode="r").R
        r_b = torch.linalg.qr(b.mT, mode="r").R
    s = singular_values(r_a @ r_b.mT)
    return torch.cat([s, s.new_zeros(*s.shape[:-1], r - k)], dim=-1)
