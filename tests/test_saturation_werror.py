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


def test_ngram_matrix_defaults_to_5_grams_seen_once_for_lists_and_int32_arrays():
    """Left to its defaults, ngram_matrix counts 5-grams (4-token contexts) and keeps every context seen once,
    whether the tokens come as a list or as an int32 array (a packed token file)."""
    tokens = [1, 2, 3, 4, 0, 1, 2, 3, 4, 2, 1, 2, 3, 4, 0, 3]  # (1,2,3,4) -> 0, 2, 0
    ref = dense_ngram(tokens, 5, 1, 5)
    assert len(ref) == 9 and np.allclose(ref[(1, 2, 3, 4)], [2 / 3, 0, 1 / 3, 0, 0])
    for given in (tokens, np.asarray(tokens, dtype=np.int32)):
        w, ctx = ngram_matrix(given)
        assert w.shape == (len(ref), 5) and ctx.shape == (len(ref), 4)
        for i, c in enumerate(ctx.tolist()):
            np.testing.assert_allclose(w[i].toarray().ravel(), ref[tuple(c)], rtol=1e-12)


def test_ngram_matrix_vocabulary_reaches_the_largest_id_of_narrow_integer_tokens():
    """Byte-level ids stored as uint8 (or 16-bit ids as uint16) up to the type's largest value: the vocabulary
    is that id + 1 (256, 65536), not a wrapped-around 0."""
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        tokens = np.array([0, top, 7, top, 0, 7], dtype=dtype)
        w, ctx = ngram_matrix(tokens, n=2)
        assert w.shape == (3, top + 1) and ctx.ravel().tolist() == [0, 7, top]
        assert w[0, top] == w[0, 7] == 0.5 and w[1, top] == 1.0 and w[2, 7] == w[2, 0] == 0.5


@pytest.mark.parametrize("method", [None, "gram", "arpack", "auto"])
def test_top_singular_values_of_small_square_and_single_row_matrices_are_the_dense_ones(method):
    """Every method, and the default one, gives the dense SVD's values also for 1 x n, n x 1, 2 x 2 and square
    matrices, at k = min(shape) - 1, min(shape) and beyond."""
    from lmdynamics.saturation.werror import top_singular_values

    rng = np.random.default_rng(11)
    for shape in ((1, 6), (6, 1), (2, 2), (2, 7), (7, 2), (5, 5)):
        w = sp.csr_matrix(rng.random(shape) + 0.1)
        dense = np.linalg.svd(w.toarray(), compute_uv=False)
        small = min(shape)
        for k in sorted({max(small - 1, 1), small, small + 2}):
            got = top_singular_values(w, k) if method is None else top_singular_values(w, k, method)
            assert got.shape == (min(k, small),), (shape, k)
            np.testing.assert_allclose(got, dense[: min(k, small)], atol=1e-9, err_msg=str((shape, k)))


def test_arpack_gives_the_same_values_on_every_call():
    """ARPACK starts from a fixed vector: two runs on the same matrix give bit-identical singular values (a
    rerun reproduces a W-error curve exactly)."""
    from lmdynamics.saturation.werror import top_singular_values

    rng = np.random.default_rng(3)
    for shape in ((60, 40), (40, 60)):
        w = sp.random(*shape, density=0.3, random_state=rng, format="csr")
        runs = [top_singular_values(w, 10, "arpack") for _ in range(3)]
        assert all(np.array_equal(runs[0], r) for r in runs[1:]), shape


def test_gram_decomposes_the_smaller_gram_matrix_and_arpack_none(monkeypatch):
    """The module docstring: ``gram`` eigendecomposes the Gram matrix of the smaller side (min x min, the
    memory bound), ``arpack`` never forms a dense Gram, even for k = min(shape) (its last value comes from
    the Frobenius norm); the values are the dense ones."""
    import torch

    from lmdynamics.saturation.werror import top_singular_values

    sizes = []
    real = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda g, *a, **k: sizes.append(tuple(g.shape)) or real(g, *a, **k))
    rng = np.random.default_rng(6)
    for shape in ((30, 12), (12, 30)):
        w = sp.random(*shape, density=0.4, random_state=rng, format="csr")
        dense = np.linalg.svd(w.toarray(), compute_uv=False)
        sizes.clear()
        np.testing.assert_allclose(top_singular_values(w, 12, "gram"), dense, atol=1e-9)
        assert sizes == [(12, 12)], shape
        sizes.clear()
        for k in (5, 12, 20):
            np.testing.assert_allclose(top_singular_values(w, k, "arpack"), dense[: min(k, 12)], atol=1e-9)
        assert sizes == [], shape


def test_gram_singular_values_of_a_rank_deficient_matrix_are_finite_and_non_negative():
    """Past the rank the Gram's eigenvalues are rounding noise, some of them negative: the singular values
    are clipped at 0, never NaN, and the curve stays 0 there."""
    from lmdynamics.saturation.werror import top_singular_values

    rng = np.random.default_rng(1)
    low = sp.csr_matrix(rng.random((30, 4)) @ rng.random((4, 20)))
    s = top_singular_values(low, 20, "gram")
    assert s.shape == (20,) and np.isfinite(s).all() and (s >= 0).all()
    np.testing.assert_allclose(s, np.linalg.svd(low.toarray(), compute_uv=False), atol=1e-6)
    curve = w_error_curve(low, range(0, 21), "gram")
    assert all(curve[d] == 0.0 for d in range(4, 21))


def test_curve_is_exactly_zero_at_the_rank_bound_even_when_rounding_exceeds_the_tail_floor():
    """At d = min(shape) the error is exactly 0 whatever the rounding of the singular values: here a float32
    matrix, whose Gram and Frobenius norm disagree by ~1e-8 (over TAIL_FLOOR); below the bound, the dense value."""
    from lmdynamics.saturation.werror import TAIL_FLOOR, top_singular_values

    rng = np.random.default_rng(1)
    w = sp.random(40, 25, density=0.3, random_state=rng, format="csr", dtype=np.float32)
    s = top_singular_values(w, 25, "gram")
    assert 1 - float((s**2).sum()) / float(w.multiply(w).sum()) > TAIL_FLOOR  # the rounding this is about
    curve = w_error_curve(w, [20, 24, 25, 26], "gram")
    assert curve[25] == 0.0 and curve[26] == 0.0
    dense = w.toarray().astype(np.float64)
    for d in (20, 24):
        assert curve[d] == pytest.approx(dense_w_error(dense, d), rel=1e-3), d


def test_write_defaults_to_5_grams_seen_once_an_empty_description_and_run_corpus(tmp_path):
    """``write`` left to its defaults: the 5-gram matrix of every context (n=5, min_count=1 in the CSV, the
    contexts counted by hand), an empty corpus description in the CSV and the run named ``corpus`` in the rows."""
    import pandas as pd

    from lmdynamics import store
    from lmdynamics.saturation.werror import write

    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 4, size=80) * rng.integers(1, 3, size=80)  # ids 0..6, vocabulary 9
    ref = dense_ngram(tokens.tolist(), 5, 1, 9)
    path = write(tmp_path / "out", tokens, 9)
    csv = pd.read_csv(path, keep_default_na=False)
    assert (csv.n == 5).all() and (csv.min_count == 1).all() and (csv.contexts == len(ref)).all()
    assert (csv.corpus == "").all() and (csv.vocab == 9).all()
    dense = np.stack([ref[c] for c in sorted(ref)])
    for d, v in zip(csv.d, csv.w_error):
        assert v == pytest.approx(dense_w_error(dense, d), abs=1e-7), d
    rows = store.read_table(store.table_path(tmp_path / "out"))
    assert set(rows[rows.metric == "w_error"].run) == {"corpus"}


def test_corpus_tokens_are_the_training_stream_a_run_with_these_data_settings_sees(tmp_path, monkeypatch):
    """``corpus_tokens`` on a tiny local text: the training split's packed blocks joined into one 1-D stream,
    the tokenizer's vocabulary and the corpus description, exactly as a data module with the same source,
    tokenizer and max_documents builds them, cached under ``cache_dir``."""
    import random

    from lmdynamics.data.datamodule import TextDataModule
    from lmdynamics.saturation.werror import corpus_tokens

    monkeypatch.setenv("LMDYNAMICS_CACHE", str(tmp_path / "default"))  # the default cache, kept out of ~/.cache
    rng = random.Random(0)
    words = "the of and to in is a that for it as was with be by on not he this are or his from at which".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(150, 250))) + "." for _ in range(60)]
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(docs))
    ref = TextDataModule(source=str(text), tokenizer="bpe:300", max_documents=40, cache_dir=str(tmp_path / "ref"))
    ref.prepare()
    tokens, vocab, description = corpus_tokens(str(text), "bpe:300", max_documents=40, cache_dir=str(tmp_path / "c"))
    assert tokens.ndim == 1 and tokens.size == ref.train_blocks.numel() > 0
    np.testing.assert_array_equal(tokens, ref.train_blocks.reshape(-1).numpy())
    assert vocab == ref.vocab_size == 300 and isinstance(vocab, int)
    assert description == ref.corpus_description and "local text" in description
    assert any((tmp_path / "c" / "tokens").glob("*.npy")) and not (tmp_path / "default").exists()  # cached where asked


def test_corpus_tokens_defaults_are_a_default_runs_data_settings(monkeypatch):
    """Left to its defaults, ``corpus_tokens`` asks the data module for what a run with default data settings
    trains on: the bundled corpus, the default BPE of 4,096 ids, every document, the default cache (a stand-in
    data module records the settings: no Lightning import, no corpus built)."""
    import sys
    import types

    import torch

    from lmdynamics.data.corpus import BUNDLED
    from lmdynamics.saturation.werror import corpus_tokens

    seen = {}

    class Recorder:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            self.train_blocks, self.vocab_size, self.corpus_description = torch.arange(6).reshape(2, 3), 7, "d"

        def prepare(self):
            pass

    monkeypatch.setitem(sys.modules, "lmdynamics.data.datamodule",
                        types.SimpleNamespace(TextDataModule=Recorder))
    tokens, vocab, description = corpus_tokens()
    assert seen == {"source": BUNDLED, "tokenizer": "bpe:4096", "max_documents": None, "cache_dir": None}
    assert BUNDLED == "python-docs" and tokens.tolist() == list(range(6)) and (vocab, description) == (7, "d")
