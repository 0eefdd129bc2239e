"""W-error: n-gram matrix built right, curve equal to the dense float64 value, 0 at d >= rank."""

import numpy as np
import pytest
import scipy.sparse as sp

from lmdynamics.saturation.werror import ngram_matrix, w_error_curve


def dense_w_error(w: np.ndarray, d: int) -> float:
    s = np.linalg.svd(w, compute_uv=False)
    return float(np.linalg.norm(s[d:]) / np.linalg.norm(s))


def test_ngram_matrix_counts_by_hand():
    tokens = [0, 1, 2, 0, 1, 3, 0, 1, 2, 4]
    w, ctx = ngram_matrix(tokens, n=3, min_count=1, vocab_size=5)
    rows = {tuple(c): w[i].toarray().ravel() for i, c in enumerate(ctx)}
    assert np.allclose(rows[(0, 1)], [0, 0, 2 / 3, 1 / 3, 0])  # (0,1) -> 2, 3, 2
    assert np.allclose(rows[(1, 2)], [0.5, 0, 0, 0, 0.5]) and np.allclose(rows[(2, 0)], [0, 1, 0, 0, 0])
    assert np.allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0) and w.shape == (5, 5)  # contexts (0,1) (1,2) (2,0) (1,3) (3,0)
    w2, ctx2 = ngram_matrix(tokens, n=3, min_count=2, vocab_size=5)
    assert {tuple(c) for c in ctx2} == {(0, 1), (1, 2)} and w2.shape == (2, 5)


@pytest.mark.parametrize("method", ["gram", "arpack"])
@pytest.mark.parametrize("shape, density", [((40, 25), 0.3), ((15, 60), 0.5)])
def test_curve_equals_dense_svd_and_is_zero_at_and_past_the_rank(method, shape, density):
    rng = np.random.default_rng(1)
    w = sp.random(*shape, density=density, random_state=rng, format="csr")
    dense = w.toarray()
    dims = range(0, min(shape) + 3)
    curve = w_error_curve(w, dims, method=method)
    for d in dims:
        assert curve[d] == pytest.approx(dense_w_error(dense, d), abs=1e-7), d
    assert curve[0] == pytest.approx(1.0) and curve[min(shape)] == 0.0
    # a rank-deficient matrix: 0 from its rank on
    low = sp.csr_matrix(rng.random((30, 4)) @ rng.random((4, 20)))
    curve = w_error_curve(low, range(0, 10), method=method)
    assert curve[3] > 1e-3 and all(curve[d] == 0.0 for d in range(4, 10))


def test_corpus_matrix_from_a_token_stream_matches_dense():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 30, size=3000) % np.array([30, 7, 30]).repeat(1000)  # mixed-entropy stream
    w, _ = ngram_matrix(tokens, n=2, min_count=3, vocab_size=30)
    curve = w_error_curve(w, [1, 4, 8, 29], method="arpack")
    for d, v in curve.items():
        assert v == pytest.approx(dense_w_error(w.toarray(), d), abs=1e-7)


def test_command_on_a_small_local_corpus(tmp_path, local_text):
    import pandas as pd

    from lmdynamics.cli import main

    out = tmp_path / "out"
    code = main(["werror", "--source", str(local_text), "--tokenizer", "bpe:300", "--max-documents", "60", "--n", "3",
                        "--hidden-sizes", "tiny=32", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    curve = pd.read_csv(out / "werror.csv")
    assert curve.d.is_monotonic_increasing and curve.w_error.is_monotonic_decreasing
    assert 32 in set(curve.d) and curve.w_error.iloc[-1] == 0.0 and (out / "figures" / "werror.png").is_file()
    assert main(["werror", "--hidden-sizes", "tiny", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
