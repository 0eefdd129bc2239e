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
