"""Property-based tests (hypothesis) where a closed form exists: CKA invariances, effective-rank bounds,
anisotropy, packing and batch-order invariants. (The LR schedule's shape is in test_recipe.py.)"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from lmdynamics.data.packing import StepBatchSampler, pack, split_documents, tokenize_stream
from lmdynamics.metrics import (
    StreamingLinearCKA,
    anisotropy,
    condition_number,
    effective_rank,
    linear_cka,
    proportional_effective_rank,
    singular_entropy_kl_uniform,
    stable_rank,
    w_error,
)
from tests.test_metrics_cka import np_cka, np_cka_debiased

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gaussian(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(seed, d):
    q, r = torch.linalg.qr(gaussian(seed, d, d))
    return q * torch.sign(torch.diagonal(r))


pairs = st.tuples(st.integers(6, 40), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1))


def correlated_pair(n, d1, d2, seed):
    x = gaussian(seed, n, d1)
    y = x[:, :1] @ gaussian(seed + 1, 1, d2) + gaussian(seed + 2, n, d2)
    return x, y


# ----------------------------------------------------------------------------------------------- CKA
@FAST
@given(pairs, st.floats(1e-3, 1e3), st.floats(-50, 50), st.booleans())
def test_cka_invariances_and_reference(pair, scale, shift, debiased):
    n, d1, d2, seed = pair
    x, y = correlated_pair(n, d1, d2, seed)
    value = linear_cka(x, y, debiased=debiased)
    reference = (np_cka_debiased if debiased else np_cka)(x.numpy(), y.numpy())
    assert value == pytest.approx(reference, rel=1e-8, abs=1e-10)  # both paths: sample vs feature space
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    transformed = [
        (x @ orthogonal(seed + 3, d1), y),  # orthogonal transform of one side
        (x, scale * y + shift),  # isotropic scaling and a shift
        (x[perm], y[perm]),  # the same permutation of the samples on both sides
        (y, x),  # symmetric
    ]
    for a, b in transformed:
        assert linear_cka(a, b, debiased=debiased) == pytest.approx(value, rel=1e-7, abs=1e-9)
    if not debiased:
        assert -1e-12 <= value <= 1 + 1e-12
        assert linear_cka(x, 3 * x @ orthogonal(seed + 4, d1) - 1) == pytest.approx(1.0, rel=1e-9)


@FAST
@given(pairs, st.booleans(), st.lists(st.integers(1, 39), max_size=4))
def test_streaming_cka_is_the_cka_of_the_concatenation(pair, debiased, cuts):
    n, d1, d2, seed = pair
    x, y = correlated_pair(n, d1, d2, seed)
    metric = StreamingLinearCKA(debiased=debiased)
    bounds = [0, *sorted({c for c in cuts if c < n}), n]
    for a, b in zip(bounds, bounds[1:]):
        metric.update(x[a:b].float(), y[a:b].float())
    expected = linear_cka(x.float(), y.float(), debiased=debiased)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------- spectra
spectra = st.lists(st.floats(0, 1e3, allow_subnormal=False), min_size=1, max_size=30).filter(lambda s: max(s) > 1e-3)


@FAST
@given(spectra)
def test_effective_rank_bounds_and_kl(values):
    s = torch.tensor(values, dtype=torch.float64)
    r, nonzero = len(values), sum(v > 0 for v in values)
    er, per = effective_rank(s), proportional_effective_rank(s)
    assert 1 - 1e-9 <= er <= nonzero * (1 + 1e-9)
    assert per == pytest.approx(er / r, rel=1e-12) and 0 < per <= 1 + 1e-12
    p = np.array(values) / sum(values)
    entropy = -sum(q * math.log(q) for q in p if q > 0)
    assert er == pytest.approx(math.exp(entropy), rel=1e-9)
    assert singular_entropy_kl_uniform(s) == pytest.approx(math.log(r) - entropy, abs=1e-9)
    assert effective_rank(s.flip(0) * 7.5) == pytest.approx(er, rel=1e-9)  # order and scale
    assert 1 - 1e-9 <= stable_rank(s) <= nonzero * (1 + 1e-9)
    assert condition_number(s) >= 1
    errors = [w_error(s, d) for d in range(r + 1)]
    assert errors[0] == pytest.approx(1.0) and errors[-1] == 0.0
    assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:]))


@FAST
@given(st.integers(1, 30), st.floats(1e-3, 1e3))
def test_effective_rank_closed_forms(r, value):
    assert effective_rank(torch.full((r,), value)) == pytest.approx(r, rel=1e-9)  # equal singular values
    assert proportional_effective_rank(torch.full((r,), value)) == pytest.approx(1.0, rel=1e-9)
    assert singular_entropy_kl_uniform(torch.full((r,), value)) == pytest.approx(0.0, abs=1e-9)
    one = torch.zeros(r)
    one[0] = value
    assert effective_rank(one) == pytest.approx(1.0)  # rank one
    assert proportional_effective_rank(one) == pytest.approx(1 / r)
    assert singular_entropy_kl_uniform(one) == pytest.approx(math.log(r), abs=1e-9)
    assert stable_rank(one) == pytest.approx(1.0) and stable_rank(torch.full((r,), value)) == pytest.approx(r)


@FAST
@given(st.integers(1, 10), st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_matrix_and_spectrum_agree(m, n, seed):
    w = gaussian(seed, m, n)
    s = torch.linalg.svdvals(w)
    q1, q2 = orthogonal(seed + 1, m), orthogonal(seed + 2, n)
    for f in (effective_rank, proportional_effective_rank, stable_rank, singular_entropy_kl_uniform):
        expected = f(s)
        for matrix in (w, w.T, q1 @ w @ q2, -2.5 * w):
            assert f(matrix) == pytest.approx(expected, rel=1e-8, abs=1e-10), f.__name__


# ----------------------------------------------------------------------------------------------- anisotropy
@FAST
@given(st.integers(2, 30), st.integers(1, 8), st.integers(0, 2**31 - 1), st.floats(1e-3, 1e3))
def test_anisotropy_is_the_mean_pairwise_cosine(n, d, seed, scale):
    h = gaussian(seed, n, d) + 0.5
    cos = torch.nn.functional.cosine_similarity(h[:, None], h[None], dim=-1)
    expected = float((cos.sum() - cos.diagonal().sum()) / (n * n - n))
    assert anisotropy(h) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    row_scales = torch.linspace(0.1, 10, n, dtype=torch.float64)[:, None]
    assert anisotropy(scale * row_scales * h) == pytest.approx(expected, rel=1e-9, abs=1e-12)  # per-row scale
    assert anisotropy(h @ orthogonal(seed + 1, d)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert anisotropy(h[:1].repeat(n, 1)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- packing
WORDS = [f"w{i}" for i in range(40)]


def word_tokenizer(ids=None):
    vocab = {"<eos>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}} if ids is None else ids
    tok = Tokenizer(WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = WhitespaceSplit()
    return SimpleNamespace(backend_tokenizer=tok), vocab


documents = st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join), min_size=1, max_size=20)


@FAST
@given(documents, st.integers(1, 5))
def test_tokenize_stream_is_each_document_then_eos(docs, batch):
    tok, vocab = word_tokenizer()
    stream = tokenize_stream(docs, tok, eos_id=0, batch=batch)
    expected = [t for d in docs for t in [vocab[w] for w in d.split()] + [0]]
    assert stream.tolist() == expected and stream.dtype == np.uint16
    assert int((stream == 0).sum()) == len(docs)


def test_tokenize_stream_keeps_ids_beyond_uint16():
    vocab = {"<eos>": 0, "small": 7, "big": 70_000, "edge": 65_535, "over": 65_536}
    tok, _ = word_tokenizer(vocab)
    assert tokenize_stream(["small edge"], tok, eos_id=0).dtype == np.uint16
    stream = tokenize_stream(["small big", "edge"], tok, eos_id=0)
    assert stream.tolist() == [7, 70_000, 0, 65_535, 0] and stream.dtype == np.int32
    assert tokenize_stream(["over"], tok, eos_id=0).tolist() == [65_536, 0]  # the first id uint16 cannot hold
    assert tokenize_stream([], tok, eos_id=0).tolist() == []


@FAST
@given(st.lists(st.integers(0, 2**16 - 1), max_size=300), st.integers(1, 40))
def test_pack_is_the_stream_cut_into_blocks(tokens, length):
    stream = np.array(tokens, dtype=np.uint16)
    blocks = pack(stream, length)
    assert blocks.dtype == torch.int64 and blocks.shape == (len(tokens) // length, length)
    assert blocks.flatten().tolist() == tokens[: blocks.numel()]
    assert 0 <= len(tokens) - blocks.numel() < length  # only an incomplete tail is dropped


@FAST
@given(st.integers(1, 60), st.integers(1, 8), st.integers(0, 1000), st.integers(1, 30), st.integers(1, 3),
       st.data())
def test_batch_order_invariants(num_blocks, batch_size, seed, max_steps, accumulate, data):
    assume(num_blocks >= batch_size)
    full = list(StepBatchSampler(num_blocks, batch_size, seed, max_steps, accumulate=accumulate))
    assert len(full) == max_steps * accumulate
    assert all(len(b) == batch_size and len(set(b)) == batch_size and 0 <= min(b) and max(b) < num_blocks
               for b in full)
    per_pass = num_blocks // batch_size
    for start in range(0, len(full), per_pass):  # no block twice within a pass over the data
        seen = [i for b in full[start:start + per_pass] for i in b]
        assert len(seen) == len(set(seen))
    start_step = data.draw(st.integers(0, max_steps))
    resumed = StepBatchSampler(num_blocks, batch_size, seed, max_steps, accumulate=accumulate, start_step=start_step)
    # a resumed sampler yields from the resume point on, but its length stays the whole epoch (Lightning
    # resumes inside that epoch: a shorter length would end the epoch early and restart the sampler)
    assert list(resumed) == full[start_step * accumulate:] and len(resumed) == len(full)
    assert [resumed.batch(m) for m in range(len(full))] == full


@FAST
@given(st.integers(2, 200), st.floats(0.01, 0.99), st.integers(0, 100))
def test_split_is_complete_disjoint_and_sized(n, fraction, seed):
    docs = [f"doc {i}" for i in range(n)]
    n_val = max(1, int(round(fraction * n)))
    assume(n_val < n)
    train, val = split_documents(docs, fraction, seed)
    assert len(val) == n_val and sorted(train + val) == sorted(docs) and not set(train) & set(val)
    assert split_documents(docs, fraction, seed) == (train, val)
