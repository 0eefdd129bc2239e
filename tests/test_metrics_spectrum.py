"""Singular values (Gram path vs float64 svdvals, ill-conditioned fallback) and the rank measures."""

import math

import pytest
import torch

from lmdynamics.metrics import (
    condition_number,
    effective_rank,
    proportional_effective_rank,
    singular_entropy_kl_uniform,
    singular_values,
    stable_rank,
    w_error,
)
from lmdynamics.metrics import spectrum


def with_spectrum(m, n, s, seed=0):
    """float32 matrix U diag(s) V^T with random orthonormal U (m x k), V (n x k)."""
    g = torch.Generator().manual_seed(seed)
    k = len(s)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return ((u * torch.as_tensor(s, dtype=torch.float64)) @ v.T).float()


def assert_accurate(s, ref):
    """The promise of spectrum.py: per-value relative error <= 1e-6 where ref >= 1e-9 s_max, and
    absolute error <= 1e-6 s_max everywhere."""
    assert s.dtype == torch.float64 and s.shape == ref.shape
    smax = ref[0]
    assert torch.all(torch.diff(s) <= 0)  # descending
    assert (s - ref).abs().max() <= 1e-6 * smax
    big = ref >= 1e-9 * smax
    assert ((s - ref).abs()[big] / ref[big]).max() <= 1e-6


def reference(w):
    return torch.linalg.svdvals(w.double())


def forbid_svd(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the Gram path should have been taken")

    monkeypatch.setattr(spectrum.torch.linalg, "svdvals", fail)


WELL_CONDITIONED = {
    "tall_random": lambda: torch.randn(6000, 96, generator=torch.Generator().manual_seed(1)),
    "wide_random": lambda: torch.randn(48, 2500, generator=torch.Generator().manual_seed(2)),
    "square": lambda: with_spectrum(120, 120, torch.linspace(3, 1, 120), seed=3),
    # a head-like decaying spectrum, condition number 500
    "tall_decaying": lambda: with_spectrum(5000, 64, torch.logspace(0, math.log10(1 / 500), 64), seed=4),
    "float64_decaying": lambda: with_spectrum(5000, 64, torch.logspace(0, math.log10(1 / 500), 64), seed=7).double() * 1.0001,
    "chunked_blocks": lambda: torch.randn(3000, 300, generator=torch.Generator().manual_seed(5)) * torch.linspace(1, 3, 300),
    "chunked_blocks_wide": lambda: (torch.randn(3000, 300, generator=torch.Generator().manual_seed(6)) * torch.linspace(1, 3, 300)).T,
}


@pytest.mark.parametrize("name", list(WELL_CONDITIONED))
def test_gram_path_matches_svdvals(name, monkeypatch):
    w = WELL_CONDITIONED[name]()
    ref = reference(w)
    if name.startswith("chunked_blocks"):  # exercise the chunked, block-triangular Gram code on a small matrix
        monkeypatch.setattr(spectrum, "_CHUNK_ELEMENTS", 1 << 16)  # 218-row chunks
        monkeypatch.setattr(spectrum, "_BLOCK", 128)  # 3 column blocks, the last one partial
    forbid_svd(monkeypatch)  # auto must take the Gram path for these
    assert_accurate(singular_values(w), ref)
    assert_accurate(singular_values(w, method="gram"), ref)


@pytest.mark.parametrize("cond", [1e5, 1e8, 1e12])
def test_ill_conditioned_falls_back_and_stays_accurate(cond):
    w = with_spectrum(3000, 40, torch.logspace(0, -math.log10(cond), 40), seed=6)
    ref = reference(w)
    assert_accurate(singular_values(w), ref)
    if cond >= 1e8:  # the check matters: the Gram eigenvalues alone lose the small values' relative accuracy
        gram = singular_values(w, method="gram")
        big = ref >= 1e-9 * ref[0]
        assert ((gram - ref).abs()[big] / ref[big]).max() > 1e-6


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("cond", [1e5, 1e12])
def test_big_matrix_fallback_goes_through_chunked_qr(cond, wide, monkeypatch):
    """A big tall (or wide) matrix falls back to the SVD of its chunked-QR factor: still accurate."""
    monkeypatch.setattr(spectrum, "_CHUNK_ELEMENTS", 1 << 10)  # 3000 x 40 counts as big
    qr_calls = []
    real_qr = torch.linalg.qr
    monkeypatch.setattr(spectrum.torch.linalg, "qr", lambda *a, **k: qr_calls.append(1) or real_qr(*a, **k))
    w = with_spectrum(3000, 40, torch.logspace(0, -math.log10(cond), 40), seed=11)
    w = w.T if wide else w
    assert_accurate(singular_values(w), reference(w))
    assert_accurate(singular_values(w, method="svd"), reference(w))
    assert len(qr_calls) >= 2 * 8  # chunks of 375 rows (m / 8), for each of the two calls
    low = with_spectrum(3000, 40, torch.linspace(1, 2, 10), seed=12)  # rank 10
    s = singular_values(low)
    assert_accurate(s, reference(low))
    assert s[10:].max() <= 1e-6 * s[0]


def test_rank_deficiency_and_zeros():
    low = with_spectrum(2000, 50, torch.linspace(1, 2, 10), seed=7)  # rank 10
    s = singular_values(low)
    assert s.shape == (50,)
    assert_accurate(s, reference(low))
    assert s[10:].max() <= 1e-6 * s[0]
    z = torch.zeros(300, 20)
    assert torch.equal(singular_values(z), torch.zeros(20, dtype=torch.float64))
    col = torch.randn(500, 8, generator=torch.Generator().manual_seed(8))
    col[:, 3] = 0
    s = singular_values(col)
    assert_accurate(s, reference(col))
    assert s[-1] <= 1e-12 * s[0]
    assert singular_values(torch.zeros(0, 5)).shape == (0,)


def test_batched_and_nonfinite():
    mats = torch.stack(
        [
            torch.randn(400, 30, generator=torch.Generator().manual_seed(9)),
            with_spectrum(400, 30, torch.logspace(0, -10, 30), seed=10),  # goes to the fallback
            torch.full((400, 30), float("nan")),
        ]
    )
    s = singular_values(mats)
    assert s.shape == (3, 30)
    assert_accurate(s[0], reference(mats[0]))
    assert_accurate(s[1], reference(mats[1]))
    assert torch.isnan(s[2]).all()
    with pytest.raises(ValueError, match="needs a matrix"):
        singular_values(torch.ones(5))


# --- rank measures -----------------------------------------------------------------------------------


def test_effective_rank_closed_forms():
    assert effective_rank(torch.eye(37)) == pytest.approx(37, rel=1e-12)
    # float64: a float32 outer product is rank 1 only up to rounding (~1e-8 singular values, ER 1 + 1e-6)
    rank1 = torch.outer(torch.randn(50, dtype=torch.float64), torch.randn(20, dtype=torch.float64))
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-9)
    # p = (3/4, 1/4): ER = exp(H(p)), natural log
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(math.exp(h), rel=1e-12)
    # zeros count in r but add no entropy
    assert effective_rank(torch.tensor([2.0, 2.0, 0.0, 0.0])) == pytest.approx(2.0, rel=1e-12)
    assert proportional_effective_rank(torch.tensor([2.0, 2.0, 0.0, 0.0])) == pytest.approx(0.5, rel=1e-12)
    assert proportional_effective_rank(torch.eye(9)) == pytest.approx(1.0, rel=1e-12)


def test_per_in_unit_interval_and_invariances():
    g = torch.Generator().manual_seed(11)
    for shape in [(200, 30), (30, 200), (64, 64)]:
        w = torch.randn(*shape, generator=g) * torch.logspace(0, -3, shape[1])
        per = proportional_effective_rank(w)
        assert 0 < per <= 1
        q, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=g, dtype=torch.float64))
        moved = (q @ w.double()) * 17.0
        assert effective_rank(moved) == pytest.approx(effective_rank(w), rel=1e-6)
    rank1 = torch.outer(torch.randn(40, dtype=torch.float64), torch.randn(10, dtype=torch.float64))
    assert proportional_effective_rank(rank1) == pytest.approx(0.1, rel=1e-9)


def test_matrix_and_spectrum_inputs_agree():
    w = torch.randn(300, 25, generator=torch.Generator().manual_seed(12))
    s = singular_values(w)
    shuffled = s[torch.randperm(25, generator=torch.Generator().manual_seed(0))]  # order does not matter
    for f in (effective_rank, proportional_effective_rank, stable_rank, condition_number, singular_entropy_kl_uniform):
        assert f(w) == pytest.approx(f(shuffled), rel=1e-12)
    assert w_error(w, 5) == pytest.approx(w_error(shuffled, 5), rel=1e-12)
    batch = torch.stack([w, 2 * w, w[:, :25].flip(0)])
    out = effective_rank(batch)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    assert torch.allclose(out, torch.full((3,), effective_rank(w), dtype=torch.float64), rtol=1e-9)


def test_stable_rank_condition_number_kl_against_torch():
    w = torch.randn(150, 40, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    fro = torch.linalg.matrix_norm(w, "fro")
    two = torch.linalg.matrix_norm(w, 2)
    assert stable_rank(w) == pytest.approx(float(fro**2 / two**2), rel=1e-10)
    assert condition_number(w) == pytest.approx(float(torch.linalg.cond(w)), rel=1e-8)
    assert stable_rank(torch.eye(12)) == pytest.approx(12.0)
    assert condition_number(torch.tensor([4.0, 2.0, 0.0])) == math.inf
    # KL(p || uniform) computed the long way
    s = singular_values(w)
    p = s / s.sum()
    kl = float((p * torch.log(p * len(p))).sum())
    assert singular_entropy_kl_uniform(w) == pytest.approx(kl, rel=1e-10)
    assert singular_entropy_kl_uniform(torch.ones(16)) == pytest.approx(0.0, abs=1e-12)
    assert singular_entropy_kl_uniform(torch.tensor([5.0, 0.0, 0.0, 0.0])) == pytest.approx(math.log(4))


def test_w_error_is_best_rank_d_approximation_error():
    w = torch.randn(80, 30, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    for d in (0, 1, 7, 29, 30, 45):
        approx = (u[:, :d] * s[:d]) @ vh[:d]
        expected = float(torch.linalg.matrix_norm(w - approx) / torch.linalg.matrix_norm(w))
        assert w_error(w, d) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert w_error(torch.tensor([3.0, 2.0, 1.0]), 1) == pytest.approx(math.sqrt(5 / 14))
    with pytest.raises(ValueError, match="non-negative int"):
        w_error(w, -1)


def test_zero_matrix_and_bad_spectra():
    z = torch.zeros(10, 4)
    for f in (effective_rank, proportional_effective_rank, stable_rank, condition_number, singular_entropy_kl_uniform):
        assert math.isnan(f(z))
    with pytest.raises(ValueError, match="non-negative"):
        effective_rank(torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="empty"):
        effective_rank(torch.tensor([]))


def test_small_decompositions_run_on_one_thread_and_restore_the_count(monkeypatch):
    seen = []
    real = torch.linalg.eigvalsh
    monkeypatch.setattr(spectrum.torch.linalg, "eigvalsh", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        singular_values(torch.randn(300, 40, generator=torch.Generator().manual_seed(13)))
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setattr(spectrum, "_SERIAL_BELOW", 40)  # a matrix this wide keeps every thread
        singular_values(torch.randn(300, 40, generator=torch.Generator().manual_seed(13)))
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


MEASURES = {
    "effective_rank": spectrum.effective_rank,
    "proportional_effective_rank": spectrum.proportional_effective_rank,
    "stable_rank": spectrum.stable_rank,
    "condition_number": spectrum.condition_number,
    "gini": spectrum.gini,
    "singular_entropy_kl_uniform": spectrum.singular_entropy_kl_uniform,
    "w_error": lambda x: spectrum.w_error(x, 2),
}


@pytest.mark.parametrize("name", list(MEASURES))
def test_each_measure_names_itself_in_its_errors(name):
    measure = MEASURES[name]
    with pytest.raises(ValueError, match=rf"^{name} needs a matrix"):
        measure(torch.tensor(3.0))
    with pytest.raises(ValueError, match=rf"^{name}: the spectrum is empty"):
        measure(torch.zeros(0))
    with pytest.raises(ValueError, match=rf"^{name}: the matrix has a zero dimension"):
        measure(torch.zeros(4, 0))


@pytest.mark.parametrize("name", list(MEASURES))
def test_each_measure_of_a_stack_is_the_measure_of_each_matrix(name):
    """A stack (..., m, n) gives a tensor of the stack's shape, entry by entry the float of each matrix alone;
    one matrix or one spectrum gives a float."""
    measure = MEASURES[name]
    g = torch.Generator().manual_seed(7)
    stack = torch.randn(2, 3, 12, 5, generator=g) * torch.logspace(0, -1, 5)
    out = measure(stack)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            alone = measure(stack[i, j])
            assert isinstance(alone, float)
            assert float(out[i, j]) == pytest.approx(alone, rel=1e-12)
            assert measure(spectrum.singular_values(stack[i, j])) == pytest.approx(alone, rel=1e-12)


def test_per_divides_by_the_attainable_rank_given():
    w = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    er = spectrum.effective_rank(w)
    for r in (1, 4, 6):
        assert spectrum.proportional_effective_rank(w, rank=r) == pytest.approx(er / r, rel=1e-12)
    for bad in (0, 7):
        with pytest.raises(ValueError, match=r"attainable rank .* must be in \[1, 6\]"):
            spectrum.proportional_effective_rank(w, rank=bad)


def test_lists_empty_stacks_and_a_single_infinity():
    """Plain lists are read as tensors; a stack of empty matrices gives (stack, 0) float64 values; a matrix
    whose only non-finite entry is +inf (its minimum still finite) gives NaN, beside a finite one that does not."""
    assert singular_values([[3.0, 0.0], [0.0, 4.0]]).tolist() == [4.0, 3.0]
    assert effective_rank([1.0, 1.0, 1.0]) == pytest.approx(3.0, rel=1e-12)
    empty = singular_values(torch.zeros(3, 4, 0))
    assert empty.shape == (3, 0) and empty.dtype == torch.float64
    w = torch.eye(3).repeat(2, 1, 1)
    w[0, 1, 2] = float("inf")
    s = singular_values(w)
    assert torch.isnan(s[0]).all() and torch.equal(s[1], torch.ones(3, dtype=torch.float64))


def test_a_tall_narrow_matrix_sums_the_gram_of_every_chunk_of_rows(monkeypatch):
    """At most _BLOCK columns: the chunked Gram adds each chunk of rows in one product, and every chunk counts."""
    monkeypatch.setattr(spectrum, "_CHUNK_ELEMENTS", 1 << 12)  # 128-row chunks of a 32-column matrix
    w = torch.randn(2000, 32, generator=torch.Generator().manual_seed(21)) * torch.linspace(1, 2, 32)
    ref = reference(w)
    forbid_svd(monkeypatch)
    assert_accurate(singular_values(w), ref)


@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
def test_every_method_gives_a_stack_the_values_of_each_matrix(method):
    mats = torch.stack([torch.randn(60, 20, generator=torch.Generator().manual_seed(22)),
                        with_spectrum(60, 20, torch.logspace(0, -3, 20), seed=23)])
    s = singular_values(mats, method=method)
    assert s.shape == (2, 20)
    for i in range(2):
        assert_accurate(s[i], reference(mats[i]))


def test_the_chunked_qr_takes_chunks_of_an_eighth_of_the_rows_when_that_is_under_4k(monkeypatch):
    """rows per chunk = max(k, min(4k, m // 8)): here m // 8 = 150 < 4k = 400, so chunks of 150 rows, and the
    factor's singular values are the matrix's."""
    w = with_spectrum(1200, 100, torch.logspace(0, -12, 100), seed=24)
    monkeypatch.setattr(spectrum, "_CHUNK_ELEMENTS", 1 << 10)
    added = []
    real_qr = torch.linalg.qr
    monkeypatch.setattr(spectrum.torch.linalg, "qr", lambda a, **k: added.append(a.shape[0]) or real_qr(a, **k))
    assert_accurate(singular_values(w, method="svd"), reference(w))
    stacked = [added[0]] + [rows - 100 for rows in added[1:]]  # each QR stacks the k x k factor on the new chunk
    assert sum(stacked) == 1200 and max(stacked) <= 150


@pytest.mark.parametrize("ratio", [0.9, 1.1])
def test_the_gram_values_are_kept_exactly_where_their_error_bound_is_within_the_tolerance(ratio, monkeypatch):
    """The documented rule: keep the Gram eigenvalues iff delta <= 2 * 1e-7 * lambda_min, with delta =
    4 eps lambda_max (sqrt(m) + sqrt(k)); else the SVD. A matrix with lambda_max = 9 and lambda_min set so that
    delta / (2e-7 lambda_min) = ratio sits on either side of the rule."""
    m, k = 400, 10
    delta = 4 * torch.finfo(torch.float64).eps * (math.sqrt(m) + math.sqrt(k))
    s_min = math.sqrt(delta / (2e-7 * ratio))
    w = 3 * with_spectrum(m, k, torch.logspace(0, math.log10(s_min), k), seed=25).double()  # both lambdas x 9
    ref = reference(w)
    calls = []
    real = torch.linalg.svdvals
    monkeypatch.setattr(spectrum.torch.linalg, "svdvals", lambda a: calls.append(1) or real(a))
    assert_accurate(singular_values(w), ref)
    assert bool(calls) == (ratio > 1)


@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
def test_a_non_finite_matrix_leaves_the_others_of_its_stack_to_the_method_asked(method):
    ill = with_spectrum(300, 20, torch.logspace(0, -10, 20), seed=26)  # gram alone loses its small values
    stack = torch.stack([ill, torch.full_like(ill, float("nan")), 2 * ill])
    got = singular_values(stack, method=method)
    assert torch.isnan(got[1]).all()
    assert torch.equal(got[[0, 2]], singular_values(stack[[0, 2]], method=method))
    if method == "gram":  # so the check above tells the methods apart on this matrix
        assert not torch.allclose(got[0], singular_values(ill, method="auto"), rtol=1e-6, atol=0)


@pytest.mark.parametrize("shape", [(3000, 200), (200, 3000), (12000, 48)])
def test_every_tensor_the_chunked_paths_make_is_on_the_matrixs_device(shape):
    """The chunked Gram (both block widths) and the chunked QR of a big matrix, and the empty spectrum of a matrix
    with a zero dimension, stay on the matrix's device. PyTorch's ``meta`` device stands in for an accelerator (shapes
    and devices, no values): a tensor made on the CPU by mistake meets the matrix's chunks and raises, or comes back
    on the CPU. The paths with a data-dependent branch (the finiteness and accuracy checks) cannot run on ``meta``:
    tests/test_metrics_on_gpu.py covers them on a GPU."""
    w = torch.empty(shape, device="meta")
    assert w.numel() > spectrum._CHUNK_ELEMENTS and max(shape) >= 2 * min(shape)  # both chunked paths are taken
    tall = w if shape[0] >= shape[1] else w.mT
    k = min(shape)
    gram = spectrum._gram(tall)
    assert gram.device.type == "meta" and gram.shape == (k, k) and gram.dtype == torch.float64
    s = spectrum._svdvals64(w)
    assert s.device.type == "meta" and s.shape == (k,) and s.dtype == torch.float64
    for empty in (torch.empty(0, 5, device="meta"), torch.empty(3, 4, 0, device="meta")):
        s = singular_values(empty)
        assert s.device.type == "meta" and s.shape == (*empty.shape[:-2], 0)
