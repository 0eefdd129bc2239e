"""PER relative to the attainable rank: an OV circuit W_O^h W_V^h is d x d but of rank <= d_head, so PER = ER / d
cannot exceed d_head / d while ``per_attainable`` = ER / d_head reaches 1. Checked on OV circuits built with known
singular values (ER in closed form), through the one row function the live callbacks and the offline runner share,
and in the report's figures."""

import math

import pytest
import torch

from lmdynamics import store
from lmdynamics.report.run_report import write_report
from lmdynamics.measure import gradient_metric_rows, tag_rows, weight_metric_rows
from lmdynamics.metrics.spectrum import proportional_effective_rank
from tests.helpers.figures import figure_texts, text_of  # noqa: F401  (figure_texts is a fixture)

D, HEADS = 8, 2
D_HEAD = D // HEADS
# head 0: singular values 4, 2, 1, 1 -> p = (1/2, 1/4, 1/8, 1/8), H = 1.75 ln 2, ER = 2^1.75
# head 1: two equal nonzero values -> ER = 2 exactly
SPECTRA = {0: [4.0, 2.0, 1.0, 1.0], 1: [3.0, 3.0, 0.0, 0.0]}
ER = {0: 2 ** 1.75, 1: 2.0}


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def layer_weights() -> dict[str, torch.Tensor]:
    """query_key_value and dense of one GPT-NeoX layer whose head h has OV = U_h diag(SPECTRA[h]) V_h^T.

    GPT-NeoX's fused QKV holds, per head h, rows [3 h dh, 3 h dh + dh) = Q, then K, then V (its forward views the
    output as [heads, 3 dh]); attention.dense's columns [h dh, (h + 1) dh) are W_O^h."""
    qkv = torch.randn(3 * D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dense = torch.zeros(D, D, dtype=torch.float64)
    for h, s in SPECTRA.items():
        u, v = orthonormal(D, D_HEAD, 10 + h), orthonormal(D, D_HEAD, 20 + h)
        qkv[3 * h * D_HEAD + 2 * D_HEAD: 3 * (h + 1) * D_HEAD] = v.T  # W_V^h = V^T (d_head x d)
        dense[:, h * D_HEAD:(h + 1) * D_HEAD] = u @ torch.diag(torch.tensor(s, dtype=torch.float64))  # W_O^h = U S
    return {"gpt_neox.layers.0.attention.query_key_value.weight": qkv, "gpt_neox.layers.0.attention.dense.weight": dense}


def values(rows, metric):
    return {(r["layer"], r["component"]): r["value"] for r in rows if r["metric"] == metric}


def test_ov_per_attainable_is_er_over_d_head_in_closed_form():
    rows = weight_metric_rows(layer_weights().items(), num_heads=HEADS)
    er, per, attainable = values(rows, "er"), values(rows, "per"), values(rows, "per_attainable")
    for h in SPECTRA:
        key = (0, f"ov_head{h:02d}")
        assert er[key] == pytest.approx(ER[h], rel=1e-9)
        assert per[key] == pytest.approx(ER[h] / D, rel=1e-9)  # the matrix is d x d
        assert attainable[key] == pytest.approx(ER[h] / D_HEAD, rel=1e-9)
    # a full-rank d_head spectrum reaches 1 only relative to d_head
    flat = proportional_effective_rank(torch.tensor([1.0] * D_HEAD + [0.0] * (D - D_HEAD), dtype=torch.float64), D_HEAD)
    assert flat == pytest.approx(1.0, rel=1e-12)
    # every other matrix: the attainable rank is min(m, n), so it equals PER
    assert attainable[(0, "qkv")] == pytest.approx(per[(0, "qkv")], rel=1e-12)
    assert attainable[(0, "dense")] == pytest.approx(per[(0, "dense")], rel=1e-12)


def test_the_gradient_of_an_ov_circuit_is_bounded_by_twice_d_head():
    weights = layer_weights()
    grads = {name: torch.randn(w.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
             for name, w in weights.items()}
    rows = gradient_metric_rows(grads.items(), weights, num_heads=HEADS)
    er, attainable = values(rows, "grad_er"), values(rows, "grad_per_attainable")
    for h in SPECTRA:
        key = (0, f"ov_head{h:02d}")
        assert attainable[key] == pytest.approx(er[key] / min(2 * D_HEAD, D), rel=1e-12)


def test_attainable_rank_out_of_range_is_refused():
    s = torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="attainable rank 5"):
        proportional_effective_rank(s, 5)
    assert proportional_effective_rank(s) == pytest.approx(1.0)
    assert math.isclose(proportional_effective_rank(s, 2), 2.0)


def test_the_report_draws_it_with_the_normaliser_on_every_panel(tmp_path, figure_texts):
    rows = weight_metric_rows(layer_weights().items(), num_heads=HEADS)
    frame = store.to_frame(tag_rows(rows, "r", "m", 0, 0) + tag_rows(rows, "r", "m", 10, 100))
    write_report(frame, tmp_path)
    for name in ("per_attainable_steps__m", "per_attainable_layers"):
        assert (tmp_path / "figures" / f"{name}.png").is_file(), name
        text = text_of(figure_texts, name)
        assert "PER (ER / attainable rank)" in text
        assert "ov (mean over heads; ER / d_head)" in text and "qkv (ER / min(m, n))" in text
    # the Gini of an OV circuit runs over all d singular values, d - d_head of them 0: its panel says so
    assert "at least d - d_head of them 0" in text_of(figure_texts, "gini_layers")
    report = (tmp_path / "report.md").read_text()
    assert "d_head for a head's OV circuit" in report  # the caption carries the catalogue's description
