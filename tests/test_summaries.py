"""Summaries from the tidy table, checked on synthetic tables with answers known by construction."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from lmdynamics import store
from lmdynamics import summaries as S


def rows(model, metric, component, layer, steps, values, tokens_per_step=10, run="r"):
    return [dict(run=run, model=model, step=s, tokens=s * tokens_per_step, layer=layer, component=component,
                 metric=metric, value=v) for s, v in zip(steps, values)]


def table(*parts):
    return store.to_frame([r for p in parts for r in p])


STEPS = list(range(0, 101, 10))
# Crosses 0.95 at step 20, dips to 0.90 at 30, is exactly 0.95 at 40 and stays above from then on.
DIPPING = [0.1, 0.5, 0.96, 0.90, 0.95, 0.97, 0.99, 0.98, 0.99, 1.0, 1.0]


def test_convergence_dip_restarts_clock_and_threshold_is_inclusive():
    t = table(rows("m", "cka_final", "mlp", 0, STEPS, DIPPING))
    conv = S.convergence_steps(t)
    assert len(conv) == 1
    r = conv.iloc[0]
    assert (r["model"], r["layer"], r["component"]) == ("m", 0, "mlp")
    assert r["step"] == 40 and r["final_step"] == 100
    assert r["fraction"] == pytest.approx(0.4) and bool(r["converged"])
    # 0.95 at step 40 fails a 0.96 threshold: the stable run now starts at step 50.
    r = S.convergence_steps(t, threshold=0.96).iloc[0]
    assert r["step"] == 50 and r["fraction"] == pytest.approx(0.5)


def test_never_converged_and_nan_counts_as_dip():
    never = [0.2, 0.5, 0.97, 0.99, 0.98, 0.96, 0.97, 0.99, 0.99, 0.98, 0.90]  # last value below
    with_nan = [0.2, 0.5, 0.97, 0.99, 0.98, 0.96, float("nan"), 0.99, 0.99, 0.98, 1.0]
    t = table(rows("m", "cka_final", "mlp", 0, STEPS, never), rows("m", "cka_final", "mlp", 1, STEPS, with_nan))
    conv = S.convergence_steps(t).set_index("layer")
    assert pd.isna(conv.loc[0, "step"]) and math.isnan(conv.loc[0, "fraction"])
    assert not bool(conv.loc[0, "converged"])
    assert conv.loc[1, "step"] == 70 and conv.loc[1, "fraction"] == pytest.approx(0.7)


def test_fraction_uses_the_models_last_step_or_an_override():
    t = table(rows("a", "cka_final", "mlp", 0, STEPS, DIPPING),
              rows("a", "loss", "model", -1, [0, 200], [5.0, 3.0]),  # training went on to step 200
              rows("b", "cka_final", "attn", 2, [0, 5, 10], [0.3, 0.99, 1.0]))
    conv = S.convergence_steps(t).set_index("model")
    assert conv.loc["a", "final_step"] == 200 and conv.loc["a", "fraction"] == pytest.approx(0.2)
    assert conv.loc["b", "step"] == 5 and conv.loc["b", "fraction"] == pytest.approx(0.5)
    conv = S.convergence_steps(t, total_steps={"a": 1000}).set_index("model")
    assert conv.loc["a", "fraction"] == pytest.approx(0.04)
    assert conv.loc["b", "fraction"] == pytest.approx(0.5)  # not in the mapping: its own last step
    # Another metric is read only when asked for.
    assert S.convergence_steps(t, metric="cka_final_debiased").empty


def test_duplicate_rows_are_averaged():
    t = table(rows("m", "cka_final", "mlp", 0, [0, 10, 20], [0.5, 0.94, 1.0], run="r1"),
              rows("m", "cka_final", "mlp", 0, [10], [0.96], run="r2"))  # mean at step 10: 0.95
    assert S.convergence_steps(t).iloc[0]["step"] == 10


def cka_crossing(model, layer, cross, steps=STEPS, component="mlp"):
    """A CKA series below 0.95 before ``cross`` and above from it on."""
    return rows(model, "cka_final", component, layer, steps, [0.99 if s >= cross else 0.6 for s in steps])


def per_rows(model, layer, p, step=100):
    """Weight PER rows whose layer mean (heads averaged into one 'ov' first) is exactly ``p``."""
    out = rows(model, "per", "qkv", layer, [step], [p]) + rows(model, "per", "mlp_out", layer, [step], [p - 0.1])
    for h, v in enumerate([p, p, p + 0.3]):  # ov mean p + 0.1; a naive mean over all five rows gives p + 0.04
        out += rows(model, "per", f"ov_head{h:02d}", layer, [step], [v])
    return out


def test_layer_per_averages_heads_into_one_ov_matrix():
    t = table(per_rows("m", 0, 0.5), per_rows("m", 1, 0.7))
    per = S.layer_per(t).set_index("layer")["per"]
    assert per[0] == pytest.approx(0.5, abs=1e-12) and per[1] == pytest.approx(0.7, abs=1e-12)
    only_qkv = S.layer_per(t, components=("qkv",)).set_index("layer")["per"]
    assert only_qkv[1] == pytest.approx(0.7)


def test_layer_per_step_choice():
    t = table(per_rows("m", 0, 0.5, step=100), per_rows("m", 0, 0.1, step=50))
    assert S.layer_per(t, step="final")["per"].iloc[0] == pytest.approx(0.5)
    assert S.layer_per(t, step="mean")["per"].iloc[0] == pytest.approx(0.3)
    assert S.layer_per(t, step=50)["per"].iloc[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="step 70"):
        S.layer_per(t, step=70)


def test_per_vs_convergence_planted_monotone_relations():
    crosses = [10, 20, 40, 60, 90]  # fractions 0.1 .. 0.9
    falling = [0.9, 0.7, 0.65, 0.3, 0.1]  # PER falls as convergence gets later: Spearman exactly -1
    rising = [0.2, 0.21, 0.5, 0.55, 0.95]  # model "z": Spearman exactly +1
    parts = []
    for layer, (c, p, q) in enumerate(zip(crosses, falling, rising)):
        parts += [cka_crossing("EleutherAI/pythia-70m", layer, c), per_rows("EleutherAI/pythia-70m", layer, p)]
        parts += [cka_crossing("z", layer, c), per_rows("z", layer, q)]
        parts += [per_rows("z", layer, 0.123, step=0)]  # an early step the default ("final") ignores
    t = table(*parts)
    points = S.per_convergence_points(t)
    assert len(points) == 10
    assert points["fraction"].tolist()[:5] == pytest.approx([0.1, 0.2, 0.4, 0.6, 0.9])
    corr = S.per_vs_convergence(t).set_index("model")
    assert list(corr.index) == ["EleutherAI/pythia-70m", "z", "all"]
    assert corr.loc["EleutherAI/pythia-70m", "spearman_rho"] == pytest.approx(-1.0)
    assert corr.loc["z", "spearman_rho"] == pytest.approx(1.0)
    frac = np.array([0.1, 0.2, 0.4, 0.6, 0.9])
    assert corr.loc["z", "pearson_r"] == pytest.approx(np.corrcoef(rising, frac)[0, 1], abs=1e-9)
    assert corr.loc["EleutherAI/pythia-70m", "pearson_r"] == pytest.approx(np.corrcoef(falling, frac)[0, 1],
                                                                            abs=1e-9)
    assert corr.loc["all", "n"] == 10
    pooled = np.corrcoef(falling + rising, np.concatenate([frac, frac]))[0, 1]
    assert corr.loc["all", "pearson_r"] == pytest.approx(pooled, abs=1e-9)


def test_per_vs_convergence_degenerate_is_nan_without_warnings():
    t = table(*[cka_crossing("m", i, c) + per_rows("m", i, 0.5) for i, c in enumerate([10, 30, 50])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corr = S.per_vs_convergence(t)
    assert len(corr) == 1 and corr.iloc[0]["n"] == 3
    assert math.isnan(corr.iloc[0]["pearson_r"]) and math.isnan(corr.iloc[0]["spearman_rho"])
    assert S.per_vs_convergence(table(cka_crossing("m", 0, 10))).empty  # no PER rows: nothing to correlate


def test_headline_numbers():
    big, small = "EleutherAI/pythia-410m", "EleutherAI/pythia-70m"
    parts = [
        rows(big, "train_loss", "model", -1, STEPS, np.linspace(6, 2, 11)),
        rows(big, "val_loss", "model", -1, [0, 50, 80, 100], [6.0, 3.0, 2.5, 2.7]),
        # CKA at step 20 (20% of 100): layer 0 mlp 0.8, layer 1 mlp 0.6, layer 0 attn 0.7 -> mean 0.7
        rows(big, "cka_final", "mlp", 0, STEPS, [0.5, 0.6, 0.8, 0.96, 0.97, 0.98, 0.99, 1, 1, 1, 1.0]),  # 0.3
        rows(big, "cka_final", "mlp", 1, STEPS, [0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 0.96, 0.97, 0.98, 0.99, 1.0]),  # 0.6
        rows(big, "cka_final", "attn", 0, STEPS, [0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 0.99, 0.99, 0.99, 0.9, 0.9]),  # never
        rows(big, "cka_final", "ov_head00", 0, STEPS, [0.0] * 11),  # per-head: left out of the headline
        rows(big, "per", "head", -1, [50, 100], [0.4, 0.35]),
        rows(big, "kl_uniform", "head", -1, [50, 100], [0.2, 0.25]),
        rows(big, "anisotropy", "final", -1, [50, 100], [0.1, 0.3]),
        rows(big, "anisotropy", "resid", 1, [50, 100], [0.5, 0.6]),
        # small model: no loss, no final-state anisotropy (falls back to the deepest resid layer)
        rows(small, "anisotropy", "resid", 0, [0, 40], [0.2, 0.4]),
        rows(small, "anisotropy", "resid", 3, [0, 40], [0.3, 0.8]),
    ]
    head = S.headline(table(*parts)).set_index("model")
    assert list(head.index) == [small, big]
    b = head.loc[big]
    assert b["loss_metric"] == "val_loss"
    assert b["final_loss"] == pytest.approx(2.7) and b["best_loss"] == pytest.approx(2.5)
    assert b["best_loss_step"] == 80 and b["final_step"] == 100 and b["final_tokens"] == 1000
    assert b["cka_step"] == 20 and b["cka_at_fraction"] == pytest.approx(0.7)
    assert b["median_convergence"] == pytest.approx(0.6)  # median of 0.3, 0.6, never
    assert b["never_converged"] == 1
    assert b["head_per"] == pytest.approx(0.35) and b["head_kl_uniform"] == pytest.approx(0.25)
    assert b["anisotropy"] == pytest.approx(0.3)
    s = head.loc[small]
    assert pd.isna(s["loss_metric"]) and math.isnan(s["final_loss"])
    assert math.isnan(s["cka_at_fraction"]) and math.isnan(s["head_per"])
    assert s["anisotropy"] == pytest.approx(0.8)
    assert S.headline(table(*parts), at_fraction=0.5).set_index("model").loc[big, "cka_at_fraction"] == \
        pytest.approx((0.98 + 0.9 + 0.99) / 3)


def test_headline_loss_fallback_order():
    t = table(rows("m", "train_loss", "model", -1, [0, 10], [5.0, 4.0]), rows("m", "loss", "model", -1, [0, 10],
                                                                               [5.5, 4.5]))
    assert S.headline(t).iloc[0]["loss_metric"] == "loss"
    assert S.headline(t).iloc[0]["final_loss"] == pytest.approx(4.5)


def test_model_order_and_names():
    t = table(*[rows(m, "loss", "model", -1, [0], [1.0]) for m in
                ["EleutherAI/pythia-2.8b-deduped", "demo", "EleutherAI/pythia-410m", "EleutherAI/pythia-1.4b",
                 "EleutherAI/pythia-70m-seed1"]],
              rows("deep", "per", "qkv", 7, [0], [0.5]), rows("demo", "per", "qkv", 1, [0], [0.5]))
    assert S.model_order(t) == ["EleutherAI/pythia-70m-seed1", "EleutherAI/pythia-410m", "EleutherAI/pythia-1.4b",
                                "EleutherAI/pythia-2.8b-deduped", "demo", "deep"]
    assert S.short_name("EleutherAI/pythia-70m") == "pythia-70m"
    assert S.model_size("pythia-1.4b-deduped") == pytest.approx(1.4e9)
    assert math.isnan(S.model_size("demo"))


def test_empty_table_gives_empty_summaries():
    empty = store.to_frame([])
    assert S.convergence_steps(empty).empty
    assert S.per_vs_convergence(empty).empty
    assert S.headline(empty).empty


# --- discriminating inputs for every threshold and tie ---------------------------------------------------------


def test_nearest_step_prefers_the_earlier_on_a_tie():
    assert S.nearest_step([0, 10, 20], 15) == 10
    assert S.nearest_step([0, 10, 20], 15.01) == 20
    assert S.nearest_step([20, 0, 10, 10], 4) == 0 and S.nearest_step([20, 0, 10], 1e9) == 20


def test_correlation_needs_three_points():
    two = table(*[cka_crossing("m", i, c) + per_rows("m", i, p) for i, (c, p) in enumerate([(10, 0.3), (30, 0.5)])])
    corr = S.per_vs_convergence(two).iloc[0]
    assert corr["n"] == 2 and math.isnan(corr["pearson_r"]) and math.isnan(corr["spearman_p"])
    three = table(*[cka_crossing("m", i, c) + per_rows("m", i, p)
                    for i, (c, p) in enumerate([(10, 0.3), (30, 0.5), (40, 0.45)])])
    corr = S.per_vs_convergence(three).iloc[0]
    x, y = [0.3, 0.5, 0.45], [0.1, 0.3, 0.4]
    assert corr["n"] == 3 and corr["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert corr["spearman_rho"] == pytest.approx(0.5) and 0 < corr["pearson_p"] < 1 and corr["spearman_p"] > 0


def test_convergence_at_step_zero_of_a_zero_length_run():
    conv = S.convergence_steps(table(rows("m", "cka_final", "mlp", 0, [0], [1.0]))).iloc[0]
    assert conv["step"] == 0 and bool(conv["converged"]) and conv["final_step"] == 0
    assert math.isnan(conv["fraction"])  # no training length to divide by


def test_select_layer_filters_and_averaging():
    t = table(rows("m", "anisotropy", "final", -1, [0, 10], [0.1, 0.2]),
              rows("m", "anisotropy", "resid", 0, [0, 10], [0.3, 0.4]),
              rows("m", "anisotropy", "resid", 0, [10], [0.6], run="r2", tokens_per_step=20))
    model_level = S.select(t, "anisotropy", per_layer=False)
    assert set(model_level["layer"]) == {-1} and model_level["value"].tolist() == [0.1, 0.2]
    per_layer = S.select(t, "anisotropy", per_layer=True)
    assert set(per_layer["layer"]) == {0} and per_layer["value"].tolist() == pytest.approx([0.3, 0.5])
    assert per_layer["tokens"].tolist() == [0, 200]  # the larger count of the duplicates
    assert len(S.select(t, "anisotropy")) == 4 and S.select(t, "anisotropy", layer=0, component="final").empty
    assert list(S.select(t, "missing").columns) == ["model", "metric", "component", "layer", "index", "step", "tokens", "value"]


def test_layer_components_order_and_choice():
    t = table(*[rows("m", "cka_final", c, 0, [0], [1.0]) for c in ["zeta", "resid", "mlp", "attn", "ov", "ov_head00"]],
              rows("m", "cka_final", "final", -1, [0], [1.0]))
    assert S.layer_components(t, "cka_final") == ["ov", "attn", "mlp", "resid", "zeta"]
    assert S.layer_components(t, "cka_final", ["mlp", "ov_head00", "missing"]) == ["mlp", "ov_head00"]
    assert S.is_head_component("ov_head12") and not S.is_head_component("ov_head") and not S.is_head_component("ov")


def test_model_size_and_short_name_edges():
    assert S.short_name("EleutherAI/pythia-70m/") == "pythia-70m" and S.short_name("local") == "local"
    assert S.model_size("runs/EleutherAI/pythia-160m-seed3") == pytest.approx(160e6)
    assert S.model_size("tiny-5k") == pytest.approx(5e3) and S.model_size("x-2t") == pytest.approx(2e12)
    assert math.isnan(S.model_size("pythia-70mb")) and math.isnan(S.model_size("neox-L2-d32-h4"))
    assert S.model_size("Pythia-1B") == pytest.approx(1e9)


def test_headline_cka_reads_per_layer_rows_at_the_nearest_step():
    t = table(rows("m", "cka_final", "mlp", 0, [0, 30, 100], [0.2, 0.6, 1.0]),
              rows("m", "cka_final", "mlp", 1, [0, 30, 100], [0.4, 0.8, 1.0]),
              rows("m", "cka_final", "final", -1, [0, 30, 100], [0.0, 0.0, 1.0]))  # model-level: left out
    head = S.headline(t).iloc[0]
    assert head["cka_step"] == 30 and head["cka_at_fraction"] == pytest.approx(0.7)  # 30 is nearest to 20
    assert head["median_convergence"] == pytest.approx(1.0) and head["never_converged"] == 0
    assert S.headline(t, at_fraction=0.1).iloc[0]["cka_step"] == 0


def test_correlation_over_a_unit_range():
    # PER from 1 to 0 and fractions from 0 to 1: both sides span exactly 1, neither is constant.
    t = table(*[cka_crossing("m", i, c) + per_rows("m", i, p) for i, (c, p) in enumerate([(0, 1.0), (50, 0.2), (100, 0.0)])])
    corr = S.per_vs_convergence(t).iloc[0]
    assert corr["pearson_r"] == pytest.approx(np.corrcoef([1.0, 0.2, 0.0], [0.0, 0.5, 1.0])[0, 1], abs=1e-12)
    assert corr["spearman_rho"] == pytest.approx(-1.0)


def test_per_convergence_points_passes_its_choices_on():
    parts = []
    for layer, cross in enumerate([20, 40, 60]):
        parts += [cka_crossing("m", layer, cross), cka_crossing("m", layer, 100 - cross, component="attn")]
        parts += [per_rows("m", layer, 0.5 + 0.1 * layer)]
    t = table(*parts)
    both = S.per_convergence_points(t).set_index("layer")["fraction"]
    assert both.tolist() == pytest.approx([0.5, 0.5, 0.5])  # mean of mlp and attn
    mlp = S.per_convergence_points(t, cka_components=["mlp"]).set_index("layer")["fraction"]
    assert mlp.tolist() == pytest.approx([0.2, 0.4, 0.6])
    longer = S.per_convergence_points(t, cka_components=["mlp"], total_steps=200)
    assert longer["fraction"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    qkv_only = S.per_convergence_points(t, per_components=["qkv"])
    assert qkv_only["per"].tolist() == pytest.approx([0.5, 0.6, 0.7])  # qkv rows carry p itself
    mlp_out = S.per_convergence_points(t, per_components=["mlp_out"])
    assert mlp_out["per"].tolist() == pytest.approx([0.4, 0.5, 0.6])


def test_headline_training_length_loss_rows_and_last_values():
    parts = [
        rows("m", "cka_final", "mlp", 0, [0, 50, 100], [0.5, 0.97, 1.0]),
        rows("m", "val_loss", "model", -1, [0, 50, 100], [4.0, 3.0, 3.5]),
        rows("m", "val_loss", "head", -1, [0, 50, 100], [1.0, 0.5, 0.1]),  # not the model's loss
        rows("m", "val_loss", "model", 0, [100], [0.01]),  # nor a layer's
        rows("m", "val_loss", "model", -1, [150], [float("nan")]),  # a NaN loss is skipped
        rows("m", "per", "head", -1, [0, 50, 100], [0.9, 0.5, 0.7]),  # last of three
        rows("m", "per", "z", -1, [100], [0.1]),  # another model-level matrix
        rows("m", "kl_uniform", "head", -1, [0, 50, 100], [0.1, 0.3, 0.2]),
    ]
    head = S.headline(table(*parts)).iloc[0]
    assert head["final_loss"] == pytest.approx(3.5) and head["best_loss"] == pytest.approx(3.0)
    assert head["best_loss_step"] == 50 and head["final_step"] == 150
    assert head["head_per"] == pytest.approx(0.7) and head["head_kl_uniform"] == pytest.approx(0.2)
    longer = S.headline(table(*parts), total_steps=500).iloc[0]
    assert longer["final_step"] == 500 and longer["median_convergence"] == pytest.approx(0.1)
    assert longer["cka_step"] == 100  # nearest to 20% of 500


def test_headline_without_cka_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = S.headline(table(rows("m", "loss", "model", -1, [0, 10], [2.0, 1.0]))).iloc[0]
    assert math.isnan(head["median_convergence"]) and head["never_converged"] == 0 and pd.isna(head["cka_step"])


def test_last_layer_anisotropy_per_model_and_source():
    t = table(rows("a", "anisotropy", "final", -1, [0, 10], [0.1, 0.2]),
              rows("a", "anisotropy", "resid", 1, [0, 10], [0.5, 0.6]),
              rows("b-none", "loss", "model", -1, [0], [1.0]),  # no anisotropy at all
              rows("c", "anisotropy", "resid", 0, [0, 10], [0.3, 0.4]),
              rows("c", "anisotropy", "resid", 1, [0, 10], [0.5, 0.5]),
              rows("c", "anisotropy", "resid", 2, [0, 10], [0.7, 0.8]),
              rows("c", "anisotropy", "mlp", 2, [0, 10], [0.95, 0.95]),  # another component at the deepest layer
              rows("c", "anisotropy", "final", 0, [0, 10], [0.9, 0.9]))  # "final" at a layer: not the final state
    out = S.last_layer_anisotropy(t)
    assert list(out.columns) == ["model", "step", "tokens", "value", "source"]
    assert list(out.index) == list(range(4))
    assert out["model"].tolist() == ["a", "a", "c", "c"] and out["value"].tolist() == [0.1, 0.2, 0.7, 0.8]
    assert out["source"].tolist() == ["final hidden state"] * 2 + ["resid layer 2"] * 2
    empty = S.last_layer_anisotropy(table(rows("m", "loss", "model", -1, [0], [1.0])))
    assert empty.empty and list(empty.columns) == ["model", "step", "tokens", "value", "source"]


def test_per_vs_convergence_passes_its_choices_on():
    parts = []
    for layer, (cross, p) in enumerate([(20, 0.5), (40, 0.6), (60, 0.4)]):
        parts += [cka_crossing("m", layer, cross), cka_crossing("m", layer, 100 - cross, component="attn")]
        parts += [per_rows("m", layer, p)]
    t = table(*parts)
    assert math.isnan(S.per_vs_convergence(t).iloc[0]["pearson_r"])  # mean of mlp and attn: 0.5 everywhere
    corr = S.per_vs_convergence(t, cka_components=["mlp"]).iloc[0]
    assert corr["spearman_rho"] == pytest.approx(-0.5) and corr["n"] == 3


def test_convergence_steps_of_a_one_step_run_and_the_frame_it_returns():
    t = table(rows("m", "cka_final", "mlp", 1, [0, 1], [0.5, 1.0]), rows("m", "cka_final", "attn", 0, [0, 1], [0.96, 1.0]),
              rows("m", "cka_final", "mlp", 0, [0, 1], [0.2, 0.3]))
    conv = S.convergence_steps(t)
    assert conv[["component", "layer"]].values.tolist() == [["attn", 0], ["mlp", 0], ["mlp", 1]]
    assert list(conv.index) == [0, 1, 2] and conv["step"].dtype == "Int64"
    assert conv["fraction"].tolist()[0] == 0.0 and math.isnan(conv["fraction"].tolist()[1])
    assert conv["fraction"].tolist()[2] == 1.0  # step 1 of a 1-step run
    empty = S.convergence_steps(table(rows("m", "per", "qkv", 0, [0], [0.5])))
    assert empty.empty and list(empty.columns) == ["model", "layer", "component", "metric", "threshold", "step",
                                                   "previous_step", "final_step", "fraction", "resolution", "converged"]


def test_per_convergence_points_step_choice_and_frame():
    parts = []
    for layer, cross in enumerate([20, 40, 60]):
        parts += [cka_crossing("m", layer, cross), per_rows("m", layer, 0.5, step=100), per_rows("m", layer, 0.1, step=50)]
    t = table(*parts)
    assert S.per_convergence_points(t)["per"].tolist() == pytest.approx([0.5] * 3)
    points = S.per_convergence_points(t, per_step="mean")
    assert points["per"].tolist() == pytest.approx([0.3] * 3) and list(points.index) == [0, 1, 2]
    none = S.per_convergence_points(table(cka_crossing("m", 0, 20)))
    assert none.empty and list(none.columns) == ["model", "layer", "per", "fraction"]


# --- convergence steps, loss metrics and verdicts against direct computations ------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

series = st.lists(st.one_of(st.sampled_from([0.5, 0.94, 0.95, 0.96, 1.0]), st.just(math.nan)), min_size=1, max_size=7)


def direct_convergence(steps, values, threshold, total):
    """(step, previous_step, fraction, resolution) walking back from the last measurement, one value at a time."""
    at = len(values)
    while at > 0 and not math.isnan(values[at - 1]) and values[at - 1] >= threshold:
        at -= 1
    if at == len(values):
        return None, None, math.nan, math.nan
    first, previous = steps[at], steps[at - 1] if at > 0 else 0
    if total <= 0:
        return first, previous, math.nan, math.nan
    return first, previous, first / total, (first - previous) / total


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.tuples(st.sampled_from(["b", "a"]), st.sampled_from(["mlp", "attn"]),
                                 st.integers(0, 2), series), min_size=1, max_size=6,
                       unique_by=lambda g: g[:3]),
       gap=st.integers(1, 30), start=st.integers(0, 1), threshold=st.sampled_from([0.95, 0.96, 0.0]))  # 0: only NaN dips
def test_convergence_steps_are_the_start_of_the_final_run_above_the_threshold_with_its_resolution(groups, gap, start,
                                                                                                 threshold):
    parts = []
    for model, component, layer, values in groups:
        steps = [start * gap + gap * i for i in range(len(values))]  # uneven in size, starting at 0 or later
        parts.append(rows(model, "cka_final", component, layer, steps, values))
    t = table(*parts)
    total = {m: int(t.loc[t["model"] == m, "step"].max()) for m in t["model"].unique()}
    conv = S.convergence_steps(t, threshold=threshold)
    assert list(conv.index) == list(range(len(groups)))
    assert list(zip(conv["model"], conv["component"], conv["layer"])) == sorted((g[0], g[1], g[2]) for g in groups)
    assert str(conv["step"].dtype) == "Int64" and str(conv["previous_step"].dtype) == "Int64"
    for model, component, layer, values in groups:
        got = conv[(conv["model"] == model) & (conv["component"] == component) & (conv["layer"] == layer)].iloc[0]
        steps = [start * gap + gap * i for i in range(len(values))]
        first, previous, fraction, resolution = direct_convergence(steps, values, threshold, total[model])
        assert (pd.isna(got["step"]), pd.isna(got["previous_step"])) == (first is None, first is None)
        if first is not None:
            assert (int(got["step"]), int(got["previous_step"])) == (first, previous)
        assert got["converged"] == (first is not None) and got["final_step"] == total[model]
        np.testing.assert_allclose([got["fraction"], got["resolution"]], [fraction, resolution], equal_nan=True)


def test_loss_metrics_are_the_model_level_losses_present_in_catalogue_order():
    t = table(rows("m", "train_loss", "model", -1, [0, 10], [5.0, 4.0]),
              rows("m", "val_loss", "model", -1, [0], [math.nan]),  # present but never measured
              rows("m", "loss", "mlp", 0, [0], [1.0]),  # not at model level
              rows("m", "loss", "model", 2, [0], [1.0]),
              rows("m", "per", "model", -1, [0], [0.5]))  # not a loss
    assert S.loss_metrics(t) == ["train_loss"]
    t2 = table(rows("m", "train_loss", "model", -1, [0], [5.0]), rows("m", "loss", "model", -1, [0], [4.0]),
               rows("m", "val_loss", "model", -1, [0], [4.5]))
    assert S.loss_metrics(t2) == [m for m in S.LOSS_METRICS if m in ("train_loss", "loss", "val_loss")]
    assert S.loss_metrics(t2)[-1] == "train_loss"  # the held-out losses first
    assert S.loss_metrics(store.to_frame([])) == []


@pytest.mark.parametrize("p, n, verdict", [
    (S.ALPHA / 2, S.MIN_POINTS, "significant"),
    (0.0, S.MIN_POINTS + 10, "significant"),
    (S.ALPHA, S.MIN_POINTS, f"not significant (p ≥ {S.ALPHA})"),
    (S.ALPHA / 2, S.MIN_POINTS - 1, f"not significant (n < {S.MIN_POINTS})"),
    (0.5, 3, f"not significant (p ≥ {S.ALPHA}, n < {S.MIN_POINTS})"),
    (math.nan, 10, "not computable (fewer than 3 points, or one side constant)"),
    (math.inf, 10, "not computable (fewer than 3 points, or one side constant)"),
])
def test_correlation_verdict_names_every_reason(p, n, verdict):
    assert S.correlation_verdict(p, n) == verdict


def test_a_correlation_over_sides_spanning_exactly_one_is_computed():
    points = pd.DataFrame({"model": "m", "layer": [0, 1, 2, 3], "per": [1.0, 0.5, 0.25, 0.0],
                           "fraction": [0.0, 0.25, 0.75, 1.0]})
    corr = S.per_vs_convergence(store.to_frame([]), points=points).iloc[0]
    assert corr["n"] == 4
    assert corr["pearson_r"] == pytest.approx(np.corrcoef(points["per"], points["fraction"])[0, 1], abs=1e-12)
    assert corr["spearman_rho"] == pytest.approx(-1.0)
    flat = points.assign(fraction=0.5)
    assert math.isnan(S.per_vs_convergence(store.to_frame([]), points=flat).iloc[0]["pearson_r"])


def test_layer_components_come_in_the_documented_order_then_by_name():
    documented = ["ov", "attn", "mlp", "resid", "qkv", "dense", "mlp_in", "mlp_out"]
    present = documented[::-1] + ["zeta", "alpha", "ov_head03"]
    t = table(*[rows("m", "cka_final", c, 0, [0], [0.5]) for c in present],
              rows("m", "cka_final", "head", -1, [0], [0.5]))  # model level: not a layer component
    assert S.layer_components(t, "cka_final") == documented + ["alpha", "zeta"]
    assert S.layer_components(t, "cka_final", ["zeta", "ov_head03", "absent"]) == ["zeta", "ov_head03"]


def test_layer_per_is_per_transformer_layer_only():
    t = table(per_rows("m", 0, 0.5), rows("m", "per", "head", -1, [100], [0.9]),
              rows("m", "per", "qkv", -1, [100], [0.9]))  # model-level rows: not a layer
    got = S.layer_per(t, components=None)
    assert list(got.columns) == ["model", "layer", "per"] and list(got["layer"]) == [0]
    assert got["per"].iloc[0] == pytest.approx(0.5)
    assert list(S.layer_per(store.to_frame([])).columns) == ["model", "layer", "per"]


def test_select_reads_any_frame_with_or_without_an_index_column_and_several_metrics():
    plain = pd.DataFrame({"model": "m", "metric": ["a", "b", "c", "a"], "component": "x", "layer": 0,
                          "step": [0, 0, 0, 0], "tokens": [0, 0, 0, 0], "value": [1.0, 2.0, 4.0, 3.0]})
    got = S.select(plain, ["a", "b"])
    assert sorted(zip(got["metric"], got["value"])) == [("a", 2.0), ("b", 2.0)]  # duplicates averaged
    assert list(got.index) == list(range(len(got))) and set(got["index"]) == {-1}
    assert list(S.select(plain, "c")["value"]) == [4.0]
    indexed = plain.assign(index=[0, 0, 0, 1])  # two rows of metric "a" that differ by index are kept apart
    assert sorted(S.select(indexed, "a")["value"]) == [1.0, 3.0]
    later = plain.assign(step=[5, 0, 0, 5])  # metric a (two rows, averaged) after metric b: sorted by step
    got = S.select(later, ["a", "b"])
    assert list(zip(got["metric"], got["step"])) == [("b", 0), ("a", 5)]
    assert list(got.index) == [0, 1]  # rows numbered in the order they are returned


def test_short_names_drop_every_directory_and_the_owner_only():
    assert S.short_name("runs/sweep/lr-1e-3/") == "lr-1e-3"
    assert S.short_name("EleutherAI/pythia-70m") == "pythia-70m"
    assert S.short_name("runs/MODELX") == "MODELX" and S.short_name("X") == "X"


def test_models_of_no_size_in_their_name_order_by_depth_then_name():
    t = table(rows("zflat", "loss", "model", -1, [0], [1.0]),  # no per-layer rows: before any layered model
              rows("one", "per", "qkv", 0, [0], [0.5]),  # only layer 0
              rows("deep", "per", "qkv", 2, [0], [0.5]),
              rows("b-equal", "per", "qkv", 2, [0], [0.5]))
    assert S.model_order(t) == ["zflat", "one", "b-equal", "deep"]


def test_training_lengths_are_integers():
    t = table(rows("m", "loss", "model", -1, [0, 30], [2.0, 1.0]))
    lengths = S.final_steps(t)
    assert lengths == {"m": 30} and type(lengths["m"]) is int
    assert type(S.headline(t).iloc[0]["final_step"]) in (int, np.int64)


HEADLINE_COLUMNS = ["model", "final_step", "final_tokens", "loss_metric", "final_loss", "best_loss", "best_loss_step",
                    "cka_step", "cka_at_fraction", "median_convergence", "never_converged", "head_per",
                    "head_kl_uniform", "anisotropy"]


def test_headline_of_a_table_without_losses_or_cka_is_float_nan_and_missing_integer_steps():
    head = S.headline(table(rows("m", "per", "qkv", 0, [0, 10], [0.5, 0.4])))
    assert list(head.columns) == HEADLINE_COLUMNS
    row = head.iloc[0]
    assert row["loss_metric"] is None
    for col in ("final_loss", "best_loss", "cka_at_fraction", "head_per", "head_kl_uniform", "anisotropy"):
        assert head[col].dtype == np.float64 and math.isnan(row[col]), col
    for col in ("best_loss_step", "cka_step"):
        assert str(head[col].dtype) == "Int64" and pd.isna(row[col]), col
    measured = S.headline(table(rows("m", "val_loss", "model", -1, [0, 10], [3.0, 2.0]), cka_crossing("m", 0, 10)))
    assert str(measured["best_loss_step"].dtype) == "Int64" and str(measured["cka_step"].dtype) == "Int64"


def test_headline_reads_the_whole_heads_rows_and_the_last_anisotropy():
    """A mixture-of-softmaxes model: the head's rows (component ``head``), not its components' (``head_cNN``) nor
    the input embedding's (both also at layer -1); the anisotropy of the last of three measurements."""
    t = table(rows("m", "per", "head", -1, [0, 10, 20], [0.5, 0.45, 0.4]),
              rows("m", "kl_uniform", "head", -1, [0, 10, 20], [0.1, 0.2, 0.3]),
              rows("m", "per", "head_c01", -1, [0, 10, 20], [0.9, 0.9, 0.9]),
              rows("m", "kl_uniform", "head_c01", -1, [0, 10, 20], [0.9, 0.9, 0.9]),
              rows("m", "kl_uniform", "embed_in", -1, [30], [0.7]),
              rows("m", "anisotropy", "final", -1, [0, 10, 20], [0.1, 0.2, 0.25]))
    row = S.headline(t).iloc[0]
    assert (row["head_per"], row["head_kl_uniform"], row["anisotropy"]) == (0.4, 0.3, 0.25)
