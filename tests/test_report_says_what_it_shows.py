"""The report's figures and text name what they draw: the loss actually in the table, the normaliser of PER,
whether a correlation means anything, the resolution of a convergence fraction, and nothing said of several
models when there is one. Figures are read through the text of every figure saved (titles, labels, legends)."""

import numpy as np
import pytest

from lmdynamics import store
from lmdynamics.report import figures as P
from lmdynamics.report import run_report as R
from lmdynamics import summaries as S
from tests.helpers.figures import figure_texts, text_of  # noqa: F401  (figure_texts is a fixture)


def rows(model, metric, component, layer, steps, values, tokens_per_step=10):
    return [dict(run="r", model=model, step=s, tokens=s * tokens_per_step, layer=layer, component=component,
                 metric=metric, value=float(v)) for s, v in zip(steps, values)]


def table(*parts):
    return store.to_frame([r for p in parts for r in p])


STEPS = [0, 10, 20, 50, 100]


def cka_crossing(model, layer, at, component="mlp", steps=STEPS):
    """cka_final of one layer: below 0.95 before step ``at``, 0.97 from it on (1 at the end)."""
    return rows(model, "cka_final", component, layer, steps, [0.97 if s >= at else 0.5 for s in steps[:-1]] + [1.0])


def per_rows(model, layer, value, steps=STEPS):
    return [r for m in ("qkv", "dense", "mlp_in", "mlp_out") for r in rows(model, "per", m, layer, steps, [value] * len(steps))]


# -- 1. the loss the table holds ------------------------------------------------------------------------------------
def test_an_offline_table_with_only_the_probe_loss_is_called_the_probe_loss(tmp_path, figure_texts):
    t = table(rows("m", "probe_loss", "model", -1, STEPS, [8.0, 6.0, 5.5, 5.2, 5.3]), cka_crossing("m", 0, 50))
    report = R.write_report(t, tmp_path).read_text()
    loss = text_of(figure_texts, "loss")
    assert "val_loss" not in loss and "validation" not in loss
    assert "probe loss" in loss and "a late rise of the probe loss is saturation when the probe is held-out text" in loss
    caption = report.split("](figures/loss.png)")[1].strip().splitlines()[0]
    assert "probe loss (mean next-token loss on the probe sequences) `probe_loss`" in caption
    assert "validation loss" not in caption and "val_loss" not in caption
    header = next(line for line in report.splitlines() if line.startswith("| model |"))
    assert "| final probe loss `probe_loss` |" in header and "| best probe loss `probe_loss` (step) |" in header
    row = next(line for line in report.splitlines() if line.startswith("| m |"))
    assert "| 5.3 | 5.2 (50) |" in row  # the final and the best probe loss


def test_a_held_out_loss_comes_before_the_training_loss(tmp_path, figure_texts):
    t = table(rows("m", "train_loss", "model", -1, STEPS, [8, 6, 5, 4, 3]),
              rows("m", "probe_loss", "model", -1, STEPS, [8.0, 6.5, 6.0, 5.9, 5.95]))
    head = S.headline(t).iloc[0]
    assert head["loss_metric"] == "probe_loss" and head["final_loss"] == pytest.approx(5.95)
    R.write_report(t, tmp_path)
    assert "probe loss (mean next-token loss on the probe sequences) and training loss over training" in \
        text_of(figure_texts, "loss")


def test_training_loss_alone_claims_no_saturation(tmp_path, figure_texts):
    R.write_report(table(rows("m", "train_loss", "model", -1, STEPS, [8, 6, 5, 4, 3])), tmp_path)
    loss = text_of(figure_texts, "loss")
    assert "saturation" in loss and "no held-out loss" in loss and "is saturation" not in loss


def test_two_models_with_different_losses_name_the_loss_in_each_cell():
    t = table(rows("a", "val_loss", "model", -1, STEPS, [8, 6, 5, 4, 3]),
              rows("b", "probe_loss", "model", -1, STEPS, [8, 6, 5, 4.5, 4]))
    text = R.headline_markdown(t, 0.95, 0.2, "cka_final")
    assert "| final loss (named in each cell) |" in text
    assert "| 3 (val_loss) |" in text and "| 4 (probe_loss) |" in text


# -- 2. no internal codes in any figure; PER's normaliser ---------------------------------------------------------
def test_no_figure_shows_an_internal_layer_code(tmp_path, figure_texts):
    parts = [rows("m", "val_loss", "model", -1, STEPS, [8, 6, 5, 4, 3])]
    for layer in range(3):
        parts += [cka_crossing("m", layer, 20 if layer else 50), per_rows("m", layer, 0.5 + 0.1 * layer),
                  rows("m", "per", "ov_head00", layer, STEPS, [0.2] * 5),
                  rows("m", "anisotropy", "resid", layer, STEPS, [0.1, 0.2, 0.3, 0.4, 0.5])]
    parts += [rows("m", "per", c, -1, STEPS, [0.9] * 5) for c in ("embed_in", "head")]
    parts += [rows("m", "kl_uniform", "head", -1, STEPS, [0.1] * 5), rows("m", "anisotropy", "final", -1, STEPS, [0.5] * 5)]
    R.write_report(table(*parts), tmp_path)
    assert len(figure_texts) >= 8
    for name, text in figure_texts.items():
        assert "layer -1" not in text and "(-1)" not in text, name
    # PER states its normaliser: the y axis, and on the OV panel that d_head bounds an OV circuit's rank
    per = text_of(figure_texts, "per_steps")
    assert "PER (ER / min(m, n))" in per and "ER / d, while an OV circuit's rank is at most d_head" in per


# -- 3. correlations: n and significance ---------------------------------------------------------------------------
def test_a_correlation_over_few_layers_is_marked_not_significant(tmp_path, figure_texts):
    # four layers, PER and convergence fraction tied but not perfectly: a finite r with n = 4 < 5
    crossing = {0: 20, 1: 50, 2: 20, 3: 100}
    pers = {0: 0.4, 1: 0.6, 2: 0.5, 3: 0.7}
    t = table(*[cka_crossing("m", layer, at) for layer, at in crossing.items()],
              *[per_rows("m", layer, v) for layer, v in pers.items()])
    corr = S.per_vs_convergence(t).iloc[0]
    assert np.isfinite(corr["pearson_r"]) and corr["n"] == 4
    text = R.correlation_markdown(t, 0.95, "cka_final")
    row = next(line for line in text.splitlines() if line.startswith("| m |"))
    assert row.startswith("| m | 4 |") and "not significant" in row and "n < 5" in row
    R.write_report(t, tmp_path)
    title = text_of(figure_texts, "per_vs_convergence")
    assert "n = 4 layers" in title and "not significant" in title


def test_a_strong_correlation_over_enough_layers_is_significant():
    steps = list(range(0, 101, 10))
    t = table(*[cka_crossing("m", layer, 10 * (layer + 1), steps=steps) for layer in range(8)],
              *[per_rows("m", layer, 0.9 - 0.05 * layer, steps=steps) for layer in range(8)])
    corr = S.per_vs_convergence(t).iloc[0]
    assert corr["spearman_rho"] == pytest.approx(-1.0) and corr["spearman_p"] < 0.05
    row = next(line for line in R.correlation_markdown(t, 0.95, "cka_final").splitlines() if line.startswith("| m |"))
    assert row.endswith("| significant |")
    assert S.correlation_verdict(0.01, 5) == "significant"
    assert S.correlation_verdict(0.05, 10).startswith("not significant")  # p = alpha is not below it
    assert S.correlation_verdict(0.001, 4) == "not significant (n < 5)"


# -- 4. the box plot's caption -------------------------------------------------------------------------------------
def test_the_box_plot_compares_sizes_only_when_there_are_several(tmp_path):
    one = table(cka_crossing("m", 0, 20), cka_crossing("m", 1, 50))
    text = R.write_report(one, tmp_path / "one").read_text()
    caption = text.split("](figures/cka_final_box.png)")[1].strip().splitlines()[0]
    assert "larger models" not in caption and "how much the layers differ" in caption
    two = table(cka_crossing("pythia-70m", 0, 20), cka_crossing("pythia-160m", 0, 50))
    text = R.write_report(two, tmp_path / "two").read_text()
    assert "larger models should sit higher and tighter" in text.split("](figures/cka_final_box.png)")[1]


# -- 5. the resolution of a convergence fraction -------------------------------------------------------------------
def test_the_convergence_fraction_states_its_resolution(tmp_path, figure_texts):
    t = table(cka_crossing("m", 0, 50), cka_crossing("m", 1, 20), cka_crossing("m", 2, 0))
    conv = S.convergence_steps(t).set_index("layer")
    # crossing at 50 after a measurement at 20: known to within (50 - 20) / 100; at 20 after 10: 0.1
    assert conv.loc[0, "previous_step"] == 20 and conv.loc[0, "resolution"] == pytest.approx(0.3)
    assert conv.loc[1, "previous_step"] == 10 and conv.loc[1, "resolution"] == pytest.approx(0.1)
    assert conv.loc[2, "previous_step"] == 0 and conv.loc[2, "resolution"] == 0.0  # already there at the first step
    report = R.write_report(t, tmp_path).read_text()
    assert "0.3 of training" in text_of(figure_texts, "cka_final_convergence")
    caption = report.split("](figures/cka_final_convergence.png)")[1].strip().splitlines()[0]
    assert "0.3 of training (steps 20 → 50 of 100)" in caption
    assert "0.3 of training (steps 20 → 50 of 100)" in report.split("## Headline numbers")[1].split("##")[0]


# -- 6. a per-layer anisotropy figure needs layers -----------------------------------------------------------------
def test_anisotropy_of_one_layer_draws_no_per_layer_figure(tmp_path):
    one = table(rows("m", "anisotropy", "resid", 3, STEPS, [0.1, 0.2, 0.3, 0.3, 0.3]))
    text = R.write_report(one, tmp_path / "one").read_text()
    assert not (tmp_path / "one" / "figures" / "anisotropy_layers.png").exists()
    assert "anisotropy of one layer only (layer 3)" in text.split("## Not drawn")[1]
    assert (tmp_path / "one" / "figures" / "anisotropy_steps.png").is_file()  # the deepest layer over training
    two = table(*[rows("m", "anisotropy", "resid", layer, STEPS, [0.1 * layer] * 5) for layer in (0, 1)])
    R.write_report(two, tmp_path / "two")
    assert (tmp_path / "two" / "figures" / "anisotropy_layers.png").is_file()
    assert P.plot_anisotropy_by_layer(one, tmp_path / "x.png") is None
