"""Figures and the report, drawn from synthetic tidy tables (never from model files)."""

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from lmdynamics import store
from lmdynamics.report import figures as P
from lmdynamics.report import run_report as R
from lmdynamics import summaries as S

ROOT = Path(__file__).resolve().parents[1]
PAPER_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000] + list(range(3000, 143001, 20000)) + [143000]


def synthetic_table(models: dict[str, int], steps=PAPER_STEPS, tokens_per_step=2_097_152, run="synthetic",
                    n_sv=64, seed=0, with_head=True, with_per=True, with_anisotropy=True,
                    components=("ov", "attn", "mlp", "resid"), debiased=True) -> pd.DataFrame:
    """A plausible multi-model table: later convergence for smaller models, a late loss rise for the smallest.

    ``models`` maps a model name to its layer count; ``steps`` are shared. CKA of layer l crosses 0.95 at a
    planted fraction of training and is exactly 1 at the last step (the reference).
    """
    rng = np.random.default_rng(seed)
    steps = np.asarray(sorted(set(steps)))
    T = steps[-1]
    out = []

    def add(model, metric, component, layer, values, at=steps):
        out.extend(dict(run=run, model=model, step=int(s), tokens=int(s) * tokens_per_step, layer=int(layer),
                        component=component, metric=metric, value=float(v)) for s, v in zip(at, values))

    for k, (model, n_layers) in enumerate(models.items()):
        late = 0.5 / (k + 1)  # bigger (later in the dict) models converge earlier
        t = steps / T
        loss = 2.5 + 8.0 * np.exp(-steps / (0.02 * T)) + (0.3 * np.clip(t - 0.6, 0, None) if k == 0 else 0)
        add(model, "val_loss", "model", -1, loss + rng.normal(0, 0.01, len(steps)))
        add(model, "train_loss", "model", -1, loss + 0.05 + rng.normal(0, 0.05, len(steps)))
        for layer in range(n_layers):
            frac = min(0.95, late * (0.4 + 0.8 * layer / max(n_layers - 1, 1)))
            tau = frac * T / np.log(0.6 / 0.05)  # 1 - 0.6 exp(-s / tau) reaches 0.95 at s = frac T
            for ci, comp in enumerate(components):
                cka = 1 - 0.6 * np.exp(-steps / tau) * (1 + 0.1 * ci)
                cka = np.clip(cka + rng.normal(0, 0.01, len(steps)), -0.1, 1.0)
                cka[-1] = 1.0
                add(model, "cka_final", comp, layer, cka)
                if debiased:
                    add(model, "cka_final_debiased", comp, layer, np.where(steps == T, 1.0, cka ** 1.3 - 0.05))
                if with_anisotropy and comp in ("resid", "mlp"):
                    add(model, "anisotropy", comp, layer, 0.1 + 0.5 * t * (layer + 1) / n_layers / (k + 1))
            if with_per:
                base = 0.9 - 0.6 * frac
                for m, off in (("qkv", 0.02), ("dense", -0.01), ("mlp_in", 0.03), ("mlp_out", -0.02)):
                    add(model, "per", m, layer, base + off - 0.1 * t + rng.normal(0, 0.005, len(steps)))
                for h in range(2):
                    add(model, "per", f"ov_head{h:02d}", layer, base - 0.05 * h - 0.1 * t)
        if with_per:
            add(model, "per", "embed_in", -1, 0.8 - 0.1 * steps / T)
            add(model, "per", "head", -1, 0.7 - (0.3 if k == 0 else 0.1) * steps / T)
        if with_head:
            idx = np.arange(n_sv)
            ckpt = steps[::3] if steps[-1] in steps[::3] else np.append(steps[::3], steps[-1])
            kls = []
            for s in steps:
                alpha = 0.2 + (1.2 if k == 0 else 0.5) * (s / T) ** 0.5
                sv = (idx + 1.0) ** -alpha
                p = sv / sv.sum()
                kls.append(float(np.sum(p * np.log(p * n_sv))))  # KL(p || uniform)
                if s in ckpt:
                    add(model, "sv_norm", "head_spectrum", 0, sv / sv[0], at=[s] * n_sv)
                    out[-n_sv:] = [dict(r, layer=i) for i, r in enumerate(out[-n_sv:])]
            add(model, "kl_uniform", "head", -1, kls)
            add(model, "anisotropy", "final", -1, 0.1 + (0.6 if k == 0 else 0.2) * steps / T)
    return store.to_frame(out)


@pytest.fixture(scope="module")
def multi_table() -> pd.DataFrame:
    return synthetic_table({"EleutherAI/pythia-70m-deduped": 3, "EleutherAI/pythia-160m-deduped": 4},
                           components=("attn", "mlp"))


@pytest.fixture(scope="module")
def live_table() -> pd.DataFrame:
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200]
    return synthetic_table({"demo": 2}, steps=steps, tokens_per_step=8192, run="demo-run", with_head=False,
                           components=("mlp", "resid"), debiased=False)


def assert_png(path: Path) -> None:
    assert path is not None and path.is_file() and path.stat().st_size > 0, path
    with path.open("rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # not a blank canvas


def expected_multi_figures(models) -> set[str]:
    names = {"loss", "per_layers", "per_vs_convergence", "kl_uniform", "anisotropy_steps", "anisotropy_layers"}
    for metric in ("cka_final", "cka_final_debiased"):
        names |= {f"{metric}_box", f"{metric}_convergence"}
        names |= {f"{metric}_{kind}__{P.slug(m)}" for m in models for kind in ("lines", "heatmap")}
    names |= {f"{kind}__{P.slug(m)}" for m in models for kind in ("per_steps", "head_spectrum")}
    return names


def test_report_of_multi_model_table_draws_every_figure(multi_table, tmp_path):
    report = R.write_report(multi_table, tmp_path / "out")
    assert report == tmp_path / "out" / "report.md"
    figdir = tmp_path / "out" / "figures"
    drawn = {p.stem for p in figdir.glob("*.png")}
    assert drawn == expected_multi_figures(S.model_order(multi_table))
    text = report.read_text()
    for name in drawn:
        assert_png(figdir / f"{name}.png")
        assert f"](figures/{name}.png)" in text
    assert not list(figdir.glob(".*")) and not list((tmp_path / "out").glob(".*"))  # no temporaries left
    assert "## Not drawn" not in text
    assert "unbiased HSIC" in text and "biased HSIC" in text
    # headline table: one row per model, small first, with the value computed by summaries.headline
    head = S.headline(multi_table)
    assert "| pythia-70m-deduped |" in text and "| pythia-160m-deduped |" in text
    assert text.index("| pythia-70m-deduped |") < text.index("| pythia-160m-deduped |")
    assert "| final validation loss `val_loss` |" in text  # every model reports val_loss: the header names it
    assert f"| {head.iloc[0]['final_loss']:.3g} |" in text
    assert "Spearman" in text


def test_report_of_live_run_table(live_table, tmp_path):
    report = R.write_report(live_table, tmp_path)
    text = report.read_text()
    drawn = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert "kl_uniform" not in drawn  # the cross-model comparison is for more than one model
    assert {"loss", "cka_final_lines__demo", "cka_final_heatmap__demo", "per_steps__demo",
            "anisotropy_steps", "cka_final_convergence"} <= drawn
    for name in drawn:
        assert_png(tmp_path / "figures" / f"{name}.png")
        assert f"figures/{name}.png" in text
    assert "## Not drawn" in text and "head figures" in text  # this run measured no head spectrum
    assert "unbiased HSIC" not in text.split("## Headline numbers")[1]  # no debiased CKA measured here


def test_report_with_only_loss_lists_what_is_missing(tmp_path):
    t = synthetic_table({"demo": 2}, steps=[0, 10, 20], with_head=False, with_per=False, with_anisotropy=False)
    t = t[t["metric"].str.contains("loss")]
    text = R.write_report(t, tmp_path).read_text()
    assert [p.name for p in (tmp_path / "figures").glob("*.png")] == ["loss.png"]
    for missing in ("cka_final", "PER figures", "head figures", "anisotropy"):
        assert missing in text.split("## Not drawn")[1]


PLOTS_NEEDING_MORE_THAN_LOSS = [
    (P.plot_cka_lines, {}), (P.plot_cka_heatmap, {}), (P.plot_cka_box, {}), (P.plot_convergence_fraction, {}),
    (P.plot_per_over_steps, {}), (P.plot_per_by_layer, {}), (P.plot_per_vs_convergence, {}),
    (P.plot_head_spectrum, {}), (P.plot_kl_uniform, {}), (P.plot_anisotropy_over_steps, {}),
    (P.plot_anisotropy_by_layer, {}),
]


@pytest.mark.parametrize("fn,kwargs", PLOTS_NEEDING_MORE_THAN_LOSS, ids=lambda x: getattr(x, "__name__", ""))
def test_each_figure_skips_with_a_reason(fn, kwargs, tmp_path):
    loss_only = store.to_frame([dict(run="r", model="m", step=s, tokens=s, layer=-1, component="model",
                                     metric="loss", value=5.0 - s) for s in range(3)])
    reasons = []
    target = tmp_path / "f.png"
    assert fn(loss_only, target, on_skip=reasons.append, **kwargs) is None
    assert not target.exists() and len(reasons) == 1 and reasons[0].startswith("f.png: ")
    assert P.plot_loss(loss_only.iloc[0:0], tmp_path / "g.png") is None  # no rows at all


def test_per_model_figure_needs_a_model_when_the_table_has_several(multi_table, tmp_path):
    with pytest.raises(ValueError, match="pass model="):
        P.plot_cka_heatmap(multi_table, tmp_path / "h.png")
    reasons = []
    assert P.plot_cka_heatmap(multi_table, tmp_path / "h.png", model="nope", on_skip=reasons.append) is None
    assert "nope" in reasons[0]
    assert_png(P.plot_cka_heatmap(multi_table, tmp_path / "h.png", model="EleutherAI/pythia-70m-deduped",
                                  components=["mlp"]))


def test_head_figure_with_kl_only_and_spectrum_only(multi_table, tmp_path):
    m = "EleutherAI/pythia-70m-deduped"
    own = multi_table[multi_table["model"] == m]
    kl_only = own[own["metric"] == "kl_uniform"]
    spec_only = own[own["component"] == "head_spectrum"]
    assert_png(P.plot_head_spectrum(kl_only, tmp_path / "a.png"))
    assert_png(P.plot_head_spectrum(spec_only, tmp_path / "b.png"))


def test_cka_colour_midpoint_is_the_threshold():
    for values in ([0.2, 0.5, 1.0], [0.96, 0.99, 1.0], [-0.3, 0.1], [np.nan, 0.97]):
        norm = P.cka_norm(np.array(values), 0.95)
        assert float(norm(0.95)) == pytest.approx(0.5)
        assert norm.vmin < 0.95 < norm.vmax and norm.vmax >= 1.0
        assert float(norm(norm.vmin)) == pytest.approx(0.0) and float(norm(norm.vmax)) == pytest.approx(1.0)
    assert float(P.cka_norm(np.array([0.0, 1.0]), 0.8)(0.8)) == pytest.approx(0.5)


def test_titles_name_the_cka_variant():
    assert "biased HSIC" in P.cka_label("cka_final") and "unbiased" not in P.cka_label("cka_final")
    assert "unbiased HSIC" in P.cka_label("cka_final_debiased")
    assert P.fmt_count(143000) == "143k" and P.fmt_count(2_097_152) == "2.1M" and P.fmt_count(512) == "512"


def test_load_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tidy table"):
        R.write_report(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "run" / "metrics.parquet").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no rows"):
        R.write_report(tmp_path / "run", tmp_path / "out")
    with pytest.raises(ValueError, match="has no rows"):
        R.write_report(store.to_frame([]), tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()


def test_figures_for_run_reads_the_run_table(live_table, tmp_path):
    store.append(store.table_path(tmp_path), live_table[live_table["metric"].str.contains("loss")])
    report = R.figures_for_run(tmp_path)
    assert report == tmp_path / "report" / "report.md"
    first = (tmp_path / "report" / "figures" / "loss.png").read_bytes()
    # more rows arrive while training goes on: the next report replaces files in place
    store.append(store.table_path(tmp_path), live_table[live_table["metric"] == "anisotropy"])
    assert R.figures_for_run(tmp_path) == report
    assert "figures/anisotropy_steps.png" in report.read_text()
    assert (tmp_path / "report" / "figures" / "loss.png").read_bytes() == first
    assert not [p for p in (tmp_path / "report").rglob(".*")]


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "analysis" / "report.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False)


def cli_main():
    """``lmdynamics report`` in this process, as ``analysis/report.py`` runs it."""
    from lmdynamics.cli import main

    return lambda argv: main(["report", *argv])


@pytest.mark.slow
def test_cli_missing_table_is_one_line_and_exit_2(tmp_path):
    missing = run_cli("--table", tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and missing.stderr.startswith("error: no tidy table")


def test_cli_empty_table_and_success(live_table, tmp_path, capsys):
    main = cli_main()
    (tmp_path / "empty" / "metrics.parquet").mkdir(parents=True)
    assert main(["--table", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "has no rows" in err and err.strip().count("\n") == 0
    run = tmp_path / "run"
    store.append(store.table_path(run), live_table[live_table["metric"] == "val_loss"])
    assert main(["--table", str(run / "metrics.parquet")]) == 0  # the table itself; --out defaults beside it
    assert (run / "report" / "report.md").is_file() and (run / "report" / "figures" / "loss.png").is_file()
    assert main(["--table", str(run), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").is_file()


def test_convergence_figure_marks_never_converged_layers(tmp_path):
    steps = [0, 10, 20, 30]
    t = store.to_frame([dict(run="r", model="m", step=s, tokens=s, layer=layer, component="mlp",
                             metric="cka_ref", value=v)
                        for layer, values in ((0, [0.5, 0.96, 0.97, 0.99]), (1, [0.5, 0.6, 0.7, 0.8]))
                        for s, v in zip(steps, values)])
    conv = S.convergence_steps(t, metric="cka_ref")
    assert conv["converged"].tolist() == [True, False]
    assert_png(P.plot_convergence_fraction(t, tmp_path / "c.png", metric="cka_ref"))
