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


def dense_ngram(tokens, n: int, min_count: int, vocab: int) -> dict[tuple, np.ndarray]:
    """Context -> next-token distribution, counted with a dict (the docstring's definition, no numpy tricks)."""
    follow: dict[tuple, list[int]] = {}
    for i in range(len(tokens) - n + 1):
        follow.setdefault(tuple(tokens[i: i + n - 1]), []).append(tokens[i + n - 1])
    out = {}
    for ctx, nxt in follow.items():
        if len(nxt) >= min_count:
            out[ctx] = np.bincount(nxt, minlength=vocab) / len(nxt)
    return out


@pytest.mark.parametrize("n, min_count", [(2, 1), (3, 2), (4, 1)])
def test_ngram_matrix_is_the_counted_next_token_distribution_of_every_context(n, min_count):
    rng = np.random.default_rng(n)
    tokens = (rng.integers(0, 6, size=400) * rng.integers(1, 3, size=400)).tolist()  # ids 0..10, 11 unseen at 11
    w, ctx = ngram_matrix(tokens, n=n, min_count=min_count, vocab_size=12)
    ref = dense_ngram(tokens, n, min_count, 12)
    assert w.shape == (len(ref), 12) and ctx.shape == (len(ref), n - 1)
    assert sorted(map(tuple, ctx.tolist())) == sorted(ref) == [tuple(c) for c in ctx.tolist()]  # sorted rows
    for i, c in enumerate(ctx.tolist()):
        np.testing.assert_allclose(w[i].toarray().ravel(), ref[tuple(c)], rtol=1e-12)
    w_default, _ = ngram_matrix(tokens, n=n, min_count=min_count)
    assert w_default.shape[1] == max(tokens) + 1  # the vocabulary defaults to the largest id + 1


def test_ngram_matrix_limits():
    w, ctx = ngram_matrix([3, 1, 4], n=3, vocab_size=5)  # exactly n tokens: one n-gram
    assert w.shape == (1, 5) and ctx.tolist() == [[3, 1]] and w[0, 4] == 1.0
    with pytest.raises(ValueError, match="too few for one 3-gram"):
        ngram_matrix([3, 1], n=3)
    with pytest.raises(ValueError, match="n must be at least 2"):
        ngram_matrix([3, 1, 4], n=1)
    w, _ = ngram_matrix([3, 1, 3, 1, 3], n=2, min_count=2)  # contexts 3 (twice) and 1 (twice) kept
    assert w.shape[0] == 2
    with pytest.raises(ValueError, match="no context occurs min_count=3 times"):
        ngram_matrix([3, 1, 3, 1, 3], n=2, min_count=3)


def test_default_dims_are_powers_of_two_up_to_the_rank_bound_plus_the_hidden_sizes():
    from lmdynamics.saturation.werror import default_dims

    for shape, extra in (((40, 25), ()), ((7, 100), (3, 7, 9, 0)), ((64, 64), (48,)), ((1, 5), ())):
        w = sp.csr_matrix(np.ones(shape))
        top = min(shape)
        want = {d for d in (2**i for i in range(12)) if d <= top} | {top} | {d for d in extra if 0 < d <= top}
        assert default_dims(w, extra) == sorted(want), (shape, extra)


@pytest.mark.parametrize("method", ["gram", "arpack", "auto"])
def test_top_singular_values_are_the_dense_ones_for_any_k(method):
    from lmdynamics.saturation.werror import top_singular_values

    rng = np.random.default_rng(4)
    for shape in ((30, 12), (12, 30)):
        w = sp.random(*shape, density=0.4, random_state=rng, format="csr")
        dense = np.linalg.svd(w.toarray(), compute_uv=False)
        for k in (1, 5, 11, 12, 20):  # k past min(shape) gives all of them
            got = top_singular_values(w, k, method)
            np.testing.assert_allclose(got, dense[: min(k, 12)], atol=1e-9)
    with pytest.raises(ValueError, match="method must be auto, gram or arpack"):
        top_singular_values(w, 2, "svd")


def test_dims_must_be_non_negative():
    w = sp.csr_matrix(np.eye(3))
    for dims in ([], [-1, 2]):
        with pytest.raises(ValueError, match="non-negative"):
            w_error_curve(w, dims)
    assert w_error_curve(w, [0]) == {0: 1.0}  # d = 0: nothing kept, the whole norm is the error
    with pytest.raises(ValueError, match="method must be auto, gram or arpack"):  # the method reaches the decomposition
        w_error_curve(w, [1], "svd")


def test_write_gives_the_dense_curve_in_csv_and_table_rows(tmp_path):
    """``werror.write``: werror.csv and the table's w_error rows hold the dense float64 W-error at the default
    dims and the hidden sizes, for the n-gram matrix of the tokens."""
    from lmdynamics import store
    from lmdynamics.saturation.werror import write

    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 18, size=600) % np.array([18, 5]).repeat(300)  # ids 18, 19 of the vocabulary unused
    path = write(tmp_path / "out", tokens, 20, n=2, min_count=2, hidden_sizes={"tiny": 6}, description="toy",
                 corpus="toy-corpus")
    import pandas as pd

    csv = pd.read_csv(path)
    assert list(csv.columns[:2]) == ["d", "w_error"] and not any(c.startswith("Unnamed") for c in csv.columns)
    with pytest.raises(ValueError, match="method must be auto, gram or arpack"):
        write(tmp_path / "bad", tokens, 20, n=2, method="svd")
    assert not (tmp_path / "bad").exists()
    w = dense_ngram(tokens.tolist(), 2, 2, 20)
    dense = np.stack([w[c] for c in sorted(w)])
    top = min(dense.shape)
    assert list(csv.d) == sorted({2**i for i in range(6) if 2**i <= top} | {top, 6})
    for d, v in zip(csv.d, csv.w_error):
        assert v == pytest.approx(dense_w_error(dense, d), abs=1e-7), d
    assert (csv.n == 2).all() and (csv.min_count == 2).all() and (csv.contexts == dense.shape[0]).all()
    assert (csv.vocab == 20).all() and (csv.corpus == "toy").all()
    rows = store.read_table(store.table_path(tmp_path / "out"))
    rows = rows[rows.metric == "w_error"].sort_values("index")
    assert list(rows["index"]) == list(csv.d) and np.allclose(rows.value, csv.w_error)
    assert set(rows.run) == {"toy-corpus"} and set(rows.model) == {"2-gram, min count 2"}


def test_auto_takes_gram_up_to_gram_max_ids_and_arpack_beyond(monkeypatch):
    """The module docstring: ``auto`` decomposes the Gram matrix when the smaller side is at most ``GRAM_MAX``
    and runs ARPACK beyond (the dense Gram would not fit); either way the values are the dense ones."""
    from lmdynamics.saturation import werror

    calls = []
    real = werror.eigsh
    monkeypatch.setattr(werror, "GRAM_MAX", 6)
    monkeypatch.setattr(werror, "eigsh", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    rng = np.random.default_rng(5)
    for small, arpack in ((6, False), (7, True)):
        w = sp.random(20, small, density=0.5, random_state=rng, format="csr")
        calls.clear()
        got = werror.top_singular_values(w, 3, "auto")
        assert bool(calls) == arpack, small
        np.testing.assert_allclose(got, np.linalg.svd(w.toarray(), compute_uv=False)[:3], atol=1e-9)
