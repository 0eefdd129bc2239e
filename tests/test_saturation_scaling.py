"""Scaling-law fit with B, beta, E fixed: planted A, alpha are recovered; gaps are obs / pred - 1."""

import numpy as np
import pandas as pd
import pytest

from lmdynamics.saturation.scaling import PAPER_FIXED, Law, fit, gaps, pythia_parameters


def _rows(law: Law, sizes: dict[str, float], noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = np.array([1000, 13000, 33000, 73000, 113000, 143000])
    out = []
    for model, n in sizes.items():
        for s in steps:
            t = s * 2_097_152
            out.append({"model": model, "step": s, "tokens": t, "value": float(law(n, t)) * (1 + noise * rng.standard_normal())})
    return pd.DataFrame(out)


def test_fit_recovers_planted_A_and_alpha():
    planted = Law(A=300.0, alpha=0.31)
    sizes = {"a": 1e9, "b": 2.8e9, "c": 6.9e9, "d": 1.2e10}
    rows = _rows(planted, sizes)
    law = fit([sizes[m] for m in rows.model], rows.tokens, rows.value)
    assert law.A == pytest.approx(300.0, rel=1e-6) and law.alpha == pytest.approx(0.31, rel=1e-6)
    assert (law.B, law.beta, law.E) == (PAPER_FIXED["B"], PAPER_FIXED["beta"], PAPER_FIXED["E"])
    noisy = _rows(planted, sizes, noise=0.002)
    law = fit([sizes[m] for m in noisy.model], noisy.tokens, noisy.value)
    assert law.A == pytest.approx(300.0, rel=0.3) and law.alpha == pytest.approx(0.31, abs=0.02)


def test_a_noisy_fit_is_the_least_squares_optimum_to_the_digits_the_report_prints():
    """Against the optimum of the relative squared error found here by Gauss-Newton in centred coordinates
    (log A - alpha mean(log N), alpha: well conditioned): A to 5 significant digits, as the report prints it."""
    sizes = {"a": 1e9, "b": 2.8e9, "c": 6.9e9, "d": 1.2e10}
    rows = _rows(Law(A=300.0, alpha=0.31), sizes, noise=0.05, seed=8)
    n, t, y = np.array([sizes[m] for m in rows.model]), rows.tokens.to_numpy(float), rows.value.to_numpy(float)
    B, beta, E = PAPER_FIXED["B"], PAPER_FIXED["beta"], PAPER_FIXED["E"]
    centred = np.log(n) - np.log(n).mean()
    c, alpha = np.log(300.0) - 0.31 * np.log(n).mean(), 0.31
    for _ in range(50):
        f = np.exp(c - alpha * centred)
        step = np.linalg.lstsq(np.column_stack([f / y, -f * centred / y]), 1.0 - (f + B / t**beta + E) / y, rcond=None)[0]
        c, alpha = c + step[0], alpha + step[1]
    law = fit(n, t, y)
    assert law.A == pytest.approx(np.exp(c + alpha * np.log(n).mean()), rel=5e-6)
    assert law.alpha == pytest.approx(alpha, abs=5e-7)


def test_integer_counts_and_exponents_are_numbers_not_int64():
    """Parameter and token counts are ints, and a fixed exponent may be one: (2^32)^2 overflows int64 to 0, not
    float64. The law's closed form at N = T = 2^32 with alpha = beta = 2 is 2 x 2^-64, and the fit is the floats' fit."""
    law = Law(A=1.0, alpha=2, B=1.0, beta=2, E=0.0)
    assert law(2**32, 2**32) == 2.0**-63 and law(np.array([2**32]), np.array([2**32])).tolist() == [2.0**-63]
    planted = Law(A=300.0, alpha=0.31, B=1.0, beta=2, E=1.69)
    n, t = [10**9, 10**9, 3 * 10**9, 3 * 10**9], [2**32, 2**33, 2**32, 2**33]
    loss = [float(planted(float(a), float(b))) for a, b in zip(n, t)]
    got, ref = fit(n, t, loss, B=1.0, beta=2, E=1.69), fit(np.array(n, float), np.array(t, float), loss, B=1.0, beta=2.0, E=1.69)
    assert (got.A, got.alpha) == pytest.approx((ref.A, ref.alpha), rel=1e-12)
    assert got.A == pytest.approx(300.0, rel=1e-6) and got.alpha == pytest.approx(0.31, rel=1e-6)


def test_gaps_of_a_model_planted_above_the_law():
    planted = Law(A=119.09, alpha=0.246)
    sizes = {"pythia-1.4b": 1.4e9, "pythia-2.8b": 2.8e9, "pythia-6.9b": 6.9e9, "small": 1.6e8}
    rows = _rows(planted, sizes)
    rows.loc[rows.model == "small", "value"] *= np.array([1.0, 1.0, 1.03, 1.12, 1.15, 1.2])  # a saturating tail
    law, table = gaps(rows, "val_loss", large=["pythia-1.4b", "pythia-2.8b", "pythia-6.9b"],
                      params={m: n for m, n in sizes.items()})
    assert law.A == pytest.approx(119.09, rel=1e-6) and law.alpha == pytest.approx(0.246, rel=1e-6)
    small = table.set_index("model").loc["small"]
    assert small.final_gap == pytest.approx(0.2, rel=1e-6) and small.final_step == 143000
    assert small.best_step == 33000 and small.best_gap == pytest.approx(0.03, rel=1e-6)
    big = table.set_index("model").loc["pythia-2.8b"]
    assert abs(big.final_gap) < 1e-9


def test_perplexity_is_fitted_as_its_log_and_pythia_names_give_parameter_counts():
    planted = Law(A=200.0, alpha=0.28)
    sizes = {"EleutherAI/pythia-1.4b": pythia_parameters("pythia-1.4b"), "pythia-2.8b-deduped": pythia_parameters("pythia-2.8b")}
    assert sizes["EleutherAI/pythia-1.4b"] == 1_414_647_808  # L(12d^2 + 13d) + 2Vd + 2d
    rows = _rows(planted, sizes)
    rows["value"] = np.exp(rows.value)
    law, _ = gaps(rows, "lambada_openai/ppl", large=list(sizes))
    assert law.alpha == pytest.approx(0.28, rel=1e-6)
    assert pythia_parameters("my-model") is None
    step0 = pd.DataFrame([{"model": m, "step": 0, "tokens": 0, "value": 1e4} for m in sizes])
    assert gaps(pd.concat([step0, rows]), "lambada_openai/ppl", large=list(sizes))[0].alpha == pytest.approx(0.28, rel=1e-6)


def test_a_perplexity_is_told_by_the_metric_name_after_the_task():
    """ln of a metric whose own name says ppl/perplexity; a task's name alone does not make a loss a perplexity."""
    from lmdynamics.saturation.scaling import as_loss

    values = pd.Series([2.0, 5.0])
    for metric in ("ppl_suite/loss", "suite/ppl_task/loss", "perplexity_set/acc_norm", "val_loss"):
        pd.testing.assert_series_equal(as_loss(metric, values), values, check_names=False)
    for metric in ("lambada_openai/ppl", "suite/task/word_perplexity", "ppl"):
        np.testing.assert_allclose(as_loss(metric, values), np.log(values.to_numpy()))


@pytest.mark.parametrize("below", [0.0, 0.01])
def test_losses_at_or_below_the_fixed_part_of_the_law_are_refused(below):
    """rest = L - E - B/T^beta must be > 0 for the log-linear start: at or below it, one ScalingError."""
    from lmdynamics.saturation.scaling import ScalingError

    n = [1e9, 1e9, 3e9, 3e9]
    t = [1e10, 2e10, 1e10, 2e10]
    fixed = dict(B=410.7, beta=0.28, E=1.69)
    loss = [float(Law(A=100.0, alpha=0.3)(a, b)) for a, b in zip(n, t)]
    loss[2] = fixed["E"] + fixed["B"] / t[2] ** fixed["beta"] - below
    with pytest.raises(ScalingError, match="at or below E"):
        fit(n, t, loss, **fixed)
    # exactly at E (with B = 0 the fixed part is E itself, no rounding)
    loss = [float(Law(A=100.0, alpha=0.3, B=0.0)(a, b)) for a, b in zip(n, t)]
    loss[1] = 1.69 - below
    with pytest.raises(ScalingError, match="at or below E"):
        fit(n, t, loss, B=0.0, beta=0.28, E=1.69)


def test_a_large_model_without_rows_and_rows_without_tokens_are_refused():
    from lmdynamics.saturation.scaling import ScalingError

    planted = Law(A=119.09, alpha=0.246)
    sizes = {"a": 1e9, "b": 3e9}
    rows = _rows(planted, sizes)
    with pytest.raises(ScalingError, match=r"large model\(s\) \['c'\] have no rows"):
        gaps(rows, "val_loss", large=["a", "b", "c"], params=sizes)
    no_tokens = rows.assign(tokens=np.where(rows.step == 13000, 0, rows.tokens))
    with pytest.raises(ScalingError, match="tokens <= 0 at step > 0"):
        gaps(no_tokens, "val_loss", large=["a", "b"], params=sizes)


def test_one_token_per_step_is_a_valid_token_count():
    """T = 1 at step 1 is inside the law (only T <= 0 is refused): the planted law comes back."""
    planted = Law(A=119.09, alpha=0.246)
    sizes = {"a": 1e9, "b": 3e9}
    rows = pd.DataFrame([{"model": m, "step": s, "tokens": s, "value": float(planted(n, s))}
                         for m, n in sizes.items() for s in (1, 10, 100, 1000)])
    law, table = gaps(rows, "val_loss", large=["a", "b"], params=sizes, min_fraction=0.0)
    assert law.A == pytest.approx(119.09, rel=1e-6) and law.alpha == pytest.approx(0.246, rel=1e-6)
    assert set(table.best_step) == {1000} and np.allclose(table.final_gap, 0.0, atol=1e-9)
