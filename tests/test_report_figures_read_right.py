"""The run report's figures say what they show: a training-health figure (learning rate, gradient norm), step
axes labelled in one style, the CKA heatmap drawn on the step axis, the PER-vs-convergence y label naming the
mean over components, and a headline cell for never-converged components that reads as words."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmdynamics import store
from lmdynamics.report import figures as P
from lmdynamics.report import run_report as R
from lmdynamics.report.figures import cka, common, rank
from lmdynamics.report.figures import loss as loss_plots
from tests.test_plots_report import synthetic_table


def with_health(table: pd.DataFrame) -> pd.DataFrame:
    steps = sorted(table.step.unique())
    rows = [dict(run="r", model=m, step=int(s), tokens=int(s) * 10, layer=-1, component="model", metric=k,
                 value=v) for m in table.model.unique() for s in steps[1:]
            for k, v in (("lr", 1e-3 * (1 - s / steps[-1])), ("grad_norm", 1.0 + 1.0 / s))]
    return pd.concat([table, store.to_frame(rows)], ignore_index=True)


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions save, kept for inspection (``save`` is where each figure ends)."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    for module in (cka, rank, loss_plots):
        monkeypatch.setattr(module, "save", keep)
    return figures


def test_the_run_report_has_a_training_health_figure(tmp_path):
    table = with_health(synthetic_table({"demo": 2}, steps=[0, 1, 2, 4, 8, 16, 32, 64, 100], with_head=False,
                                         components=("mlp", "resid"), debiased=False))
    report = R.write_report(table, tmp_path / "out").read_text()
    assert "training_health.png" in report and "`lr`" in report and "`grad_norm`" in report
    assert list((tmp_path / "out").rglob("training_health.png"))


def test_training_health_draws_the_logged_values(tmp_path, captured):
    table = with_health(synthetic_table({"demo": 2}, steps=[0, 1, 2, 4, 8], with_head=False, with_per=False,
                                         with_anisotropy=False, components=("mlp",), debiased=False))
    P.plot_training_health(table, tmp_path / "h.png")
    lr_ax, norm_ax = captured[-1].axes[:2]
    for ax, metric in ((lr_ax, "lr"), (norm_ax, "grad_norm")):
        x, y = ax.lines[0].get_data()
        want = table[table.metric == metric].sort_values("step")
        assert list(x) == list(want.step) and np.allclose(y, want.value)


def test_step_axis_labels_are_plain_numbers():
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1, 10, 100, 1000], [1, 2, 3, 4, 5])
    common.log_steps(ax, pd.DataFrame({"step": [0, 1000], "tokens": [0, 1000]}))
    FigureCanvasAgg(fig).draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "0" in labels and "1" in labels and "1k" in labels
    assert not any("10^" in lab or "mathdefault" in lab for lab in labels), labels


def test_cka_heatmap_columns_span_their_share_of_the_step_axis(tmp_path, captured):
    steps = [0, 1, 2, 4, 8, 100, 101, 200]
    table = synthetic_table({"demo": 2}, steps=steps, with_head=False, with_per=False, with_anisotropy=False,
                            components=("mlp",), debiased=False)
    P.plot_cka_heatmap(table, tmp_path / "hm.png", model="demo")
    ax = captured[-1].axes[0]
    assert ax.get_xscale() == "symlog"
    mesh = ax.collections[0]
    xs = np.unique(np.round(mesh.get_coordinates()[..., 0], 9))
    edges = cka.step_edges(np.array(steps))
    assert np.allclose(xs, edges)
    assert all(lo < s < hi or (s == 0 and lo == 0) for s, lo, hi in zip(steps, edges[:-1], edges[1:]))
    widths = np.diff(np.log10(edges + 1))  # on the log axis, steps 100 and 101 share less than 8 and 100
    assert widths[steps.index(101)] < widths[steps.index(100) - 1]


def test_per_vs_convergence_says_it_plots_means_over_components(tmp_path, captured):
    table = synthetic_table({"EleutherAI/pythia-70m-deduped": 3}, components=("attn", "mlp"))
    P.plot_per_vs_convergence(table, tmp_path / "pc.png")
    label = captured[-1].axes[0].get_ylabel()
    assert "mean over" in label and "attn" in label and "mlp" in label


def test_headline_never_converged_cell_reads_as_words():
    table = synthetic_table({"EleutherAI/pythia-70m-deduped": 3}, components=("attn", "mlp"))
    text = R.headline_markdown(table, threshold=0.95, at_fraction=0.2, cka_metric="cka_final")
    header, _, row = text.splitlines()[:3]
    column = [c.strip() for c in header.split("|")].index(next(c.strip() for c in header.split("|") if "median fraction" in c))
    cell = [c.strip() for c in row.split("|")][column]
    assert "(never)" not in header and "never do" in header
    assert cell.endswith(("none", "component", "components")), cell
