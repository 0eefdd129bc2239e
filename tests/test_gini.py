"""Gini of the singular values, added through the catalogue only: its closed forms, and its rows and
figures appearing wherever the catalogue's spectrum measurements go (live/offline rows, the report)."""

import itertools

import pytest
import torch

from lmdynamics import store
from lmdynamics.report.run_report import write_report
from lmdynamics.measure import tag_rows, weight_metric_rows
from lmdynamics.metrics.spectrum import gini


def pairwise_gini(s: torch.Tensor) -> float:
    """The definition, sum_ij |s_i - s_j| / (2 n sum s), in float64 by brute force."""
    s = [float(v) for v in s]
    return sum(abs(a - b) for a, b in itertools.product(s, s)) / (2 * len(s) * sum(s))


def test_gini_closed_forms_and_the_pairwise_definition():
    assert gini(torch.ones(7, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-15)
    assert gini(torch.tensor([3.0, 0, 0, 0], dtype=torch.float64)) == pytest.approx(3 / 4, rel=1e-15)
    w = torch.randn(9, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    assert gini(w) == pytest.approx(pairwise_gini(s), rel=1e-12)
    assert gini(s * 17.0) == pytest.approx(gini(s), rel=1e-12)  # scale-free


def test_gini_rows_and_figures_come_from_the_catalogue(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=16, vocab_size=32))
    params = dict(model.named_parameters())
    rows = weight_metric_rows(params.items(), num_heads=2, spectrum=True)
    ginis = {(r["layer"], r["component"]): r["value"] for r in rows if r["metric"] == "gini"}
    expected = {(0, "qkv"), (1, "mlp_out"), (0, "ov_head01"), (-1, "head"), (-1, "embed_in")}
    assert expected <= set(ginis)
    w = params["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"].detach().double()
    assert ginis[(1, "mlp_out")] == pytest.approx(pairwise_gini(torch.linalg.svdvals(w)), rel=1e-9)
    frame = store.to_frame(tag_rows(rows, "r", "m", 10, 100) + tag_rows(rows, "r", "m", 20, 200))
    write_report(frame, tmp_path)
    assert (tmp_path / "figures" / "gini_layers.png").is_file() and (tmp_path / "figures" / "gini_steps__m.png").is_file()
