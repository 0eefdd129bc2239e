"""W-error of a corpus (Godey et al. 2024, section 3 of docs/science.md): how well a rank-d linear head could
represent the corpus's empirical next-token distributions.

The matrix W: one row per n-gram context (the n-1 tokens before a position) seen at least ``min_count``
times in the token stream, one column per vocabulary id; row c is the unsmoothed empirical distribution of
the token that follows c (counts / the context's count, so every row sums to 1; each context is one row
whatever its frequency). Stored sparse (CSR), it never exists densely.

W-error(d) = ||s_{d+1:}||_2 / ||s||_2, the relative Frobenius error of the best rank-d approximation
(Eckart-Young). Because ||s||_2^2 = ||W||_F^2 (the sum of the squared stored entries), only the top-k
singular values are needed: W-error(d)^2 = 1 - sum_{i<=d} s_i^2 / ||W||_F^2. They come from
- ``arpack``: a truncated sparse decomposition for k = the largest d asked: ARPACK's Lanczos iteration
  (scipy.sparse.linalg.eigsh) on the Gram operator v -> W^T (W v) of the smaller side, never formed; the
  same iteration scipy.sparse.linalg.svds runs, without the dense SVD of W V (contexts x k) that svds adds
  at the end (1.3 GB for k = 256 on the default corpus's 5-gram matrix, measured by bench/bench_werror.py);
  memory: the sparse matrix plus ARPACK's ~2k Lanczos vectors of vocab length; or
- ``gram``: the eigenvalues of the smaller Gram matrix (W^T W, vocab x vocab, or W W^T) built as a sparse
  product and decomposed in float64: every singular value at once, exact up to float64 rounding of
  s_i^2 (an absolute error ~1e-16 ||W||_F^2, far below any W-error one reads), for vocabularies up to
  ``GRAM_MAX`` ids (memory: the sparse matrix plus one dense float64 Gram, 134 MB at 4,096 ids).
  ``auto`` takes ``gram`` there and ``arpack`` beyond.
At d >= min(contexts, vocab) the error is exactly 0; below that, a squared tail under ``TAIL_FLOOR`` of
||W||_F^2 (the float64 rounding level of the cumulative sum, i.e. W-error < 1e-6) is reported as 0, so
W-error is 0 from the numerical rank of W on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

GRAM_MAX = 8192
TAIL_FLOOR = 1e-12


def ngram_matrix(tokens: np.ndarray | Sequence[int], n: int = 5, min_count: int = 1,
                 vocab_size: int | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """The row-stochastic next-token matrix of the (n-1)-token contexts of ``tokens`` seen >= ``min_count``
    times, and the contexts themselves (rows x (n-1) ids, in the matrix's row order)."""
    t = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64))
    if n < 2:
        raise ValueError(f"n must be at least 2 (a context of n-1 >= 1 tokens), got {n}")
    if len(t) < n:
        raise ValueError(f"{len(t)} tokens: too few for one {n}-gram")
    vocab = int(vocab_size if vocab_size is not None else t.max() + 1)
    windows = np.lib.stride_tricks.sliding_window_view(t, n)
    contexts, inverse, counts = np.unique(windows[:, :-1], axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    keep = counts >= min_count
    if not keep.any():
        raise ValueError(f"no context occurs min_count={min_count} times; lower min_count")
    row_of = np.cumsum(keep) - 1  # old context index -> new row (valid where keep)
    sel = keep[inverse]
    rows, cols = row_of[inverse[sel]], windows[sel, -1]
    m = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(int(keep.sum()), vocab)).tocsr()
    m.sum_duplicates()
    m = sp.diags(1.0 / counts[keep]) @ m
    return m.tocsr(), contexts[keep]


def top_singular_values(w: sp.spmatrix, k: int, method: str = "auto") -> np.ndarray:
    """The k largest singular values of sparse ``w`` (descending, float64); see the module docstring."""
    small = min(w.shape)
    k = min(k, small)
    if method == "auto":
        method = "gram" if small <= GRAM_MAX else "arpack"
    if method == "gram":
        a = w.T if w.shape[0] >= w.shape[1] else w  # (small x big)
        g = torch.from_numpy((a @ a.T).toarray().astype(np.float64))
        lam = torch.linalg.eigvalsh(g).numpy()[::-1]  # 4x numpy's eigvalsh at 4096 x 4096 here (11 s vs 47 s)
        return np.sqrt(np.clip(lam[:k], 0.0, None))
    if method != "arpack":
        raise ValueError(f"method must be auto, gram or arpack, got {method!r}")
    if k >= small:  # ARPACK needs k < min(m, n): take one less; the last one is recovered from the Frobenius norm
        s = top_singular_values(w, small - 1, "arpack") if small > 1 else np.zeros(0)
        rest = max(float(w.multiply(w).sum()) - float((s**2).sum()), 0.0)
        return np.concatenate([s, [np.sqrt(rest)]])
    w = sp.csr_matrix(w, dtype=np.float64)
    wt = w.T.tocsr()
    if w.shape[0] >= w.shape[1]:
        op = LinearOperator((small, small), matvec=lambda v: wt @ (w @ v), dtype=np.float64)
    else:
        op = LinearOperator((small, small), matvec=lambda v: w @ (wt @ v), dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(small)
    lam = eigsh(op, k=k, which="LM", return_eigenvectors=False, v0=v0)
    return np.sqrt(np.clip(np.sort(lam)[::-1], 0.0, None))


def w_error_curve(w: sp.spmatrix, dims: Iterable[int], method: str = "auto") -> dict[int, float]:
    """W-error(d) for every d in ``dims``: sqrt(1 - sum_{i<=d} s_i^2 / ||W||_F^2), 0 at d >= rank."""
    dims = sorted({int(d) for d in dims})
    if not dims or dims[0] < 0:
        raise ValueError("dims must be non-negative integers")
    total = float(w.multiply(w).sum())
    s = top_singular_values(w, max(dims[-1], 1), method)
    cum = np.concatenate([[0.0], np.cumsum(s**2)])
    out = {}
    for d in dims:
        tail = 1.0 - cum[min(d, len(s))] / total
        out[d] = 0.0 if d >= min(w.shape) or tail < TAIL_FLOOR else float(np.sqrt(tail))
    return out


def default_dims(w: sp.spmatrix, extra: Iterable[int] = ()) -> list[int]:
    """Powers of two up to min(contexts, vocab), plus ``extra`` (e.g. the models' hidden sizes)."""
    top = min(w.shape)
    dims = {2**i for i in range(int(np.log2(top)) + 1)} | {top} | {int(d) for d in extra if 0 < d <= top}
    return sorted(dims)


def corpus_tokens(source: str = "python-docs", tokenizer: str = "bpe:4096", max_documents: int | None = None,
                  cache_dir: str | None = None) -> tuple[np.ndarray, int, str]:
    """The training-split token stream of a corpus as a run with these data settings sees it (documents
    joined by end-of-text, packing's remainder dropped), its vocabulary size and a description."""
    from lmdynamics.data.datamodule import TextDataModule

    dm = TextDataModule(source=source, tokenizer=tokenizer, max_documents=max_documents, cache_dir=cache_dir)
    dm.prepare()
    return dm.train_blocks.reshape(-1).numpy(), int(dm.vocab_size), dm.corpus_description


def write(out, tokens: np.ndarray, vocab_size: int, n: int = 5, min_count: int = 1, method: str = "auto",
          hidden_sizes: dict[str, int] | None = None, description: str = "", corpus: str = "corpus") -> Path:
    """``out/werror.csv`` (d, w_error), the same curve as rows of ``out/metrics.parquet`` (run ``corpus``;
    ``saturation.rows``); returns the CSV (its figure: ``report.figures.bottleneck.plot_werror``)."""
    import pandas as pd

    from lmdynamics.atomic import atomic_path
    from lmdynamics.saturation.rows import werror_rows, write_rows

    w, _ = ngram_matrix(tokens, n, min_count, vocab_size)
    curve = w_error_curve(w, default_dims(w, (hidden_sizes or {}).values()), method)
    out = Path(out)
    frame = pd.DataFrame({"d": list(curve), "w_error": list(curve.values())})
    frame = frame.assign(n=n, min_count=min_count, contexts=w.shape[0], vocab=w.shape[1], corpus=description)
    with atomic_path(out / "werror.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_rows(out, werror_rows(curve, corpus, n, min_count))
    return out / "werror.csv"
