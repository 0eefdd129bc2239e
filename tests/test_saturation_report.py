"""The saturation report's scaling-law section (``report.saturation_report``) against an independent float64 fit.

The law L(N, T) = A/N^alpha + B/T^beta + E with B, beta, E fixed is fitted here by variable projection (for a
fixed alpha the relative residual is linear in A, so A has a closed form and alpha is a 1-D minimisation), not by
``scaling.fit``'s Levenberg-Marquardt from the log-linear start; the gaps are obs / pred - 1 of the final and of
the best checkpoint at or after ``min_fraction`` of training (Godey et al. 2024, docs/science.md section 3).
"""

import re

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from lmdynamics.report.saturation_report import scaling_section, write
from lmdynamics.saturation import scaling
from lmdynamics.saturation.analyze import InputError, Series
from tests.helpers.encoding import ascii_locale

FIXED = {"B": 410.7, "beta": 0.28, "E": 1.69}  # Godey et al.'s fixed values (docs/science.md section 3)
SIZES = {"small": 1.6e8, "big-c": 6.9e9, "big-a": 1.0e9, "big-b": 2.8e9}  # rows in this (unsorted) order
LARGE = ["big-a", "big-b", "big-c"]
STEPS = np.array([0, 1, 1000, 13000, 33000, 73000, 113000, 146000])  # 73000 = 0.5 x the last step exactly
TOKENS_PER_STEP = 2_097_152


def law_loss(a, alpha, n, t, fixed=FIXED):
    return a / n**alpha + fixed["B"] / t ** fixed["beta"] + fixed["E"]


def loss_rows(seed: int = 0, noise: float = 0.004, tail=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.12, 1.2)) -> pd.DataFrame:
    """Losses on a law (A = 300, alpha = 0.31) with multiplicative noise; ``small`` gets a rising tail."""
    rng = np.random.default_rng(seed)
    out = []
    for model, n in SIZES.items():
        for i, s in enumerate(STEPS):
            t = s * TOKENS_PER_STEP
            value = 9.0 if s == 0 else law_loss(300.0, 0.31, n, t) * (1 + noise * rng.standard_normal())
            out.append(dict(run=model, model=model, step=int(s), tokens=int(t), layer=-1, component="model",
                            metric="val_loss", index=-1, value=float(value) * (tail[i] if model == "small" else 1.0)))
    return pd.DataFrame(out)


def reference_fit(rows: pd.DataFrame, min_fraction: float, fixed=FIXED) -> tuple[float, float]:
    """A, alpha minimising sum (pred / obs - 1)^2 over the large models' rows at step > 0 and step >=
    min_fraction x the model's last step, in float64 by variable projection."""
    use = rows[(rows.step > 0) & rows.model.isin(LARGE)]
    use = use[use.step >= min_fraction * use.groupby("model").step.transform("max")]
    n = use.model.map(SIZES).to_numpy(np.float64)
    t = use.tokens.to_numpy(np.float64)
    y = use.value.to_numpy(np.float64)
    c = fixed["B"] / t ** fixed["beta"] + fixed["E"]

    def best_a(alpha):
        u = n**-alpha / y
        return float(np.sum(u * (1 - c / y)) / np.sum(u * u))

    def cost(alpha):
        return float(np.sum((law_loss(best_a(alpha), alpha, n, t, fixed) / y - 1) ** 2))

    alpha = minimize_scalar(cost, bounds=(0.01, 1.0), method="bounded", options={"xatol": 1e-12}).x
    return best_a(alpha), float(alpha)


def reference_gaps(rows: pd.DataFrame, a: float, alpha: float, min_fraction: float, fixed=FIXED) -> dict:
    out = {}
    for model, own in rows[rows.step > 0].groupby("model"):
        own = own[own.step >= min_fraction * own.step.max()].sort_values("step")
        best, final = own.loc[own.value.idxmin()], own.iloc[-1]
        gap = lambda r: r.value / law_loss(a, alpha, SIZES[model], float(r.tokens), fixed) - 1  # noqa: E731
        out[model] = dict(final_step=int(final.step), final_gap=gap(final), best_step=int(best.step),
                          best_gap=gap(best))
    return out


def markdown_table(lines: list[str], first: str) -> list[dict]:
    """The Markdown table whose header starts with column ``first``, as one dict a row keyed by the header's
    names; it must be a table a renderer shows: a blank line before it, a ``|---|`` separator of as many
    columns as the header, every row as wide."""
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    at = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    header = split(lines[at])
    assert lines[at - 1] == "" and lines[at + 1] == "|---" * len(header) + "|", lines[at - 1: at + 2]
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        cells = split(line)
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


def parse_section(text: str) -> tuple[float, float, list[str], dict]:
    lines = text.splitlines()
    at = lines.index("## Scaling-law gap")  # a heading of its own, between blank lines
    assert lines[at - 1] == "" and lines[at + 1] == ""
    head = re.search(r"A = ([0-9.e+-]+), alpha = ([0-9.e+-]+) fitted on (.+?) \(", text)
    rows = {}
    for cells in markdown_table(lines[at:], "model"):
        name, large = re.fullmatch(r"(\S+)( \(large\))?", cells["model"]).groups()
        rows[name] = dict(large=large is not None, N=float(cells["N"]), final_step=int(cells["final step"]),
                          final_gap=float(cells["final gap"].rstrip("%")) / 100, best_step=int(cells["best step"]),
                          best_gap=float(cells["best gap"].rstrip("%")) / 100)
    return float(head.group(1)), float(head.group(2)), head.group(3).split(", "), rows


def check_section(text: str, rows: pd.DataFrame, min_fraction: float, fixed=FIXED) -> None:
    a_ref, alpha_ref = reference_fit(rows, min_fraction, fixed)
    a, alpha, fitted_on, table = parse_section(text)
    assert a == pytest.approx(a_ref, rel=1e-4) and alpha == pytest.approx(alpha_ref, rel=1e-3)
    assert fitted_on == LARGE
    assert f"B = {fixed['B']:g}, beta = {fixed['beta']:g}, E = {fixed['E']:g} fixed" in text
    expected = reference_gaps(rows, a_ref, alpha_ref, min_fraction, fixed)
    assert list(table) == sorted(SIZES)  # by model name, as saturation.csv
    for model, want in expected.items():
        got = table[model]
        assert got["large"] == (model in LARGE), model
        assert got["N"] == pytest.approx(SIZES[model], rel=5e-4), model
        assert (got["final_step"], got["best_step"]) == (want["final_step"], want["best_step"]), model
        for key in ("final_gap", "best_gap"):  # printed to 0.1 %
            assert got[key] == pytest.approx(want[key], abs=0.00051), (model, key)


@pytest.mark.parametrize("min_fraction", [0.0, 0.1, 0.5])
def test_scaling_section_is_the_float64_fit_and_its_gaps(min_fraction):
    rows = loss_rows()
    law, table = scaling.gaps(rows, "val_loss", LARGE, SIZES, None, min_fraction)
    text = scaling_section(law, table, LARGE)
    assert "## Scaling-law gap" in text
    check_section(text, rows, min_fraction)
    small = parse_section(text)[3]["small"]
    assert small["final_gap"] > 0.15 and small["best_step"] < small["final_step"]  # the planted rising tail shows


def test_scaling_section_with_other_fixed_values():
    fixed = {"B": 300.0, "beta": 0.3, "E": 1.5}
    rows = loss_rows(seed=3)
    law, table = scaling.gaps(rows, "val_loss", LARGE, SIZES, fixed, 0.1)
    check_section(scaling_section(law, table, LARGE), rows, 0.1, fixed)


def series_of(rows: pd.DataFrame) -> Series:
    model_rows = rows[(rows.metric == "val_loss") & (rows.layer == -1)]
    return Series("val_loss", model_rows[["model", "step", "tokens", "value"]], rows, {}, "a test table")


def test_write_reports_the_scaling_section_and_scaling_csv_of_the_fit(tmp_path):
    """min_fraction 0.5 and fixed B, beta, E other than the defaults both reach the fit and the gaps (0.5 keeps
    fewer checkpoints than the default 0.1 does on these steps; 0.2 would keep the same)."""
    rows = loss_rows(seed=1)
    fixed = {"B": 300.0, "beta": 0.3, "E": 1.5}
    report = write(tmp_path / "out", series_of(rows), min_fraction=0.5, large=LARGE, params=SIZES, fixed=fixed)
    text = report.read_text()
    assert text.startswith("# Saturation: val_loss\n") and text.index("## Figures") < text.index("## Scaling-law gap")
    section = text[text.index("\n## Scaling-law gap"):]  # from the blank line before the heading
    check_section(section, rows, 0.5, fixed)
    assert "![scaling_law](figures/scaling_law.png)" in section
    assert (tmp_path / "out" / "figures" / "scaling_law.png").is_file()
    csv = pd.read_csv(tmp_path / "out" / "scaling.csv")
    assert csv.columns[0] == "model" and not csv.columns.str.startswith("Unnamed").any()  # no index column
    csv = csv.set_index("model")
    a_ref, alpha_ref = reference_fit(rows, 0.5, fixed)
    for model, want in reference_gaps(rows, a_ref, alpha_ref, 0.5, fixed).items():
        assert csv.loc[model, "final_gap"] == pytest.approx(want["final_gap"], abs=1e-5), model
        assert csv.loc[model, "best_gap"] == pytest.approx(want["best_gap"], abs=1e-5), model
        assert csv.loc[model, "best_step"] == want["best_step"] and csv.loc[model, "final_step"] == want["final_step"]
    saturation = pd.read_csv(tmp_path / "out" / "saturation.csv")
    assert sorted(saturation.model) == sorted(SIZES)


def test_write_without_large_models_has_no_scaling_output(tmp_path):
    rows = loss_rows(seed=1)
    text = write(tmp_path / "out", series_of(rows)).read_text()
    assert "Scaling-law" not in text and not (tmp_path / "out" / "scaling.csv").exists()
    assert not (tmp_path / "out" / "figures" / "scaling_law.png").exists()


def test_scaling_gap_of_a_higher_is_better_metric_is_refused_and_nothing_written(tmp_path):
    rows = loss_rows(seed=1)
    with pytest.raises(InputError, match="higher-is-better"):
        write(tmp_path / "out", series_of(rows), higher_is_better=True, large=LARGE, params=SIZES)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="parameter count of 'small' unknown"):
        write(tmp_path / "out", series_of(rows), large=LARGE, params={m: SIZES[m] for m in LARGE})
    assert not (tmp_path / "out").exists()


# --- the whole report of a table with a plain head, a mixture of softmaxes and harness rows ----------------------

R_STEPS = np.arange(0, 11) * 100
R_LOSS = np.r_[np.linspace(5, 3, 6), 3.0 * np.array([1.0, 1.0, 1.1, 1.2, 1.3])]  # best 500, onset 700, +30.0%
KL, ER = "head KL-to-uniform of s/sum(s)", "head effective rank"  # the signals' names in the report


def _rows(model, metric, values, component, layer=-1):
    return [dict(run=model, model=model, step=int(s), tokens=int(s) * 10, layer=layer, component=component,
                 metric=metric, index=-1, value=float(v)) for s, v in zip(R_STEPS, values)]


def _degrading(up: bool, onset: int = 400) -> np.ndarray:
    """Flat at 2 up to ``onset``, then 30% a checkpoint up (``up``) or down."""
    factor = 1 + 0.3 * np.clip((R_STEPS - onset) // 100, 0, None)
    return 2.0 * (factor if up else 1 / factor)


def _report_series() -> Series:
    """``a-flat``: a curve still improving (best = final at 1000), a plain head whose ER falls from step 400 and
    whose KL-to-uniform stays flat. ``b-sat``: the saturating curve (best 500, onset 700, +30%) and a mixture of
    two component heads: component 0's KL-to-uniform rises from 400, everything else flat; no anisotropy.
    ``c-mix``: the same curve, a mixture whose KL-to-uniform has 2 checkpoints (no verdict) and whose component 0's
    ER falls from step 400. ``eval`` rows (as read from harness files) beside the table rows."""
    flat = np.full(len(R_STEPS), 2.0)
    frame = (_rows("a-flat", "val_loss", np.linspace(5, 3, len(R_STEPS)), "eval")
             + _rows("a-flat", "er", _degrading(up=False), "head") + _rows("a-flat", "kl_uniform", flat, "head")
             + _rows("b-sat", "val_loss", R_LOSS, "eval")
             + _rows("b-sat", "kl_uniform", _degrading(up=True), "head_c00")
             + _rows("b-sat", "kl_uniform", flat, "head_c01")
             + _rows("b-sat", "er", flat, "head_c00") + _rows("b-sat", "er", flat, "head_c01")
             + _rows("b-sat", "param_norm", flat, "model")
             + _rows("c-mix", "val_loss", R_LOSS, "eval")
             + _rows("c-mix", "kl_uniform", flat, "head_c00")[:2] + _rows("c-mix", "kl_uniform", flat, "head_c01")[:2]
             + _rows("c-mix", "er", _degrading(up=False), "head_c00") + _rows("c-mix", "er", flat, "head_c01"))
    frame = pd.DataFrame(frame)
    rows = frame[frame.metric == "val_loss"][["model", "step", "tokens", "value"]]
    return Series("val_loss", rows, frame, {}, "a designed table", ingested=True)


def _sections(text: str) -> dict[str, list[str]]:
    """The report's lines per heading; every heading is a line of its own between blank lines."""
    lines = text.splitlines()
    out, current = {}, None
    for i, line in enumerate(lines):
        if line.startswith("#"):
            assert (i == 0 or lines[i - 1] == "") and lines[i + 1] == "", (i, line)
            current = line
            out[current] = []
        else:
            out[current].append(line)
    return out


def test_the_report_is_the_csvs_verdicts_per_model_and_per_mixture_component_with_every_figure(tmp_path,
                                                                                                figure_texts):
    from lmdynamics.saturation.analyze import CSV_COLUMNS, detect_all
    series = _report_series()
    report = write(tmp_path / "out", series, min_fraction=0.25, margin=0.2)
    out = tmp_path / "out"
    # saturation.csv: the detector's rows, no index column; the ingested rows (component eval) as the table
    csv = pd.read_csv(out / "saturation.csv")
    expected = detect_all(series, None, 0.25, 0.2)
    assert list(csv.columns) == list(expected.columns) and list(csv.columns[:len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert csv.model.tolist() == ["a-flat", "b-sat", "c-mix"] and csv.best_step.tolist() == [1000, 500, 500]
    assert csv.onset_step.iloc[1] == 700 and csv.gap.iloc[1] == pytest.approx(0.3)
    from lmdynamics import store
    table = store.read_table(store.table_path(out))
    assert set(table.component) == {"eval"} and len(table) == 3 * len(R_STEPS)
    assert sorted(table.value) == sorted(series.frame[series.frame.component == "eval"].value)

    text = report.read_bytes().decode("utf-8")  # "—" and "±" as UTF-8 on any platform
    assert text.endswith("\n") and not text.endswith("\n\n") and not text.endswith("|\n")
    sections = _sections(text)
    assert list(sections) == ["# Saturation: val_loss", "## Per model",
                              "## Mixture components (each component head's own signal; the head signals above are "
                              "their mean)", "## Figures"]
    intro = sections["# Saturation: val_loss"]
    assert intro[:3] == ["", "Source: a designed table.", ""]
    assert "at or after 0.25 of training" in intro[3] and "saturated: gap > 0.2;" in intro[3]
    assert "within 0.1 (relative) of the best" in intro[3]
    assert intro[4] == ""
    assert sections["## Per model"] == [
        "",
        f"- **a-flat**: no saturation detected (final +0.0% vs best at step 1000); head signals moved by more than "
        f"the margin: {ER} (from step 400); did not move: {KL}.",
        f"- **b-sat**: saturation detected; final +30.0% vs best (step 500), onset at step 700; head signals that "
        f"moved first: {KL} (not in the table: anisotropy).",
        f"- **c-mix**: saturation detected; final +30.0% vs best (step 500), onset at step 700; head signals that "
        f"moved first: {ER} (not in the table: kl_uniform, anisotropy).",
        ""]
    assert sections["## Mixture components (each component head's own signal; the head signals above are their "
                    "mean)"] == [
        "", "| model | signal | moved | onset | moved first |", "|---|---|---|---|---|",
        "| b-sat | kl_uniform[head_c00] | yes | 400 | yes |", "| b-sat | kl_uniform[head_c01] | no | — | no |",
        "| b-sat | er[head_c00] | no | — | no |", "| b-sat | er[head_c01] | no | — | no |",
        "| c-mix | er[head_c00] | yes | 400 | yes |", "| c-mix | er[head_c01] | no | — | no |", ""]  # no KL verdicts
    links = sections["## Figures"]
    assert links[0] == "" and all(re.fullmatch(r"!\[(.+)\]\(figures/\1\.png\)", ln) for ln in links[1:])
    linked = {re.search(r"\(figures/(.+)\)", ln).group(1) for ln in links[1:]}
    assert linked == {p.name for p in (out / "figures").iterdir()} and len(linked) == 4  # curves + one per model
    assert "saturation_curves.png" in linked
    assert {p.name for p in out.iterdir()} == {"saturation.csv", "report.md", "figures", store.TABLE_NAME}
    for name in linked:  # every figure names the metric
        assert any("val_loss" in t for t in figure_texts[name]), (name, figure_texts[name])


def test_the_report_is_utf8_whatever_the_locale(tmp_path):
    """The report holds "—" and "±": written as UTF-8 where the locale's encoding is ASCII."""
    with ascii_locale():
        report = write(tmp_path / "out", _report_series(), min_fraction=0.25, margin=0.2)
    assert "—" in report.read_bytes().decode("utf-8")


def test_a_report_without_mixtures_has_no_component_section_and_its_yes_no_words(tmp_path):
    from lmdynamics.report.saturation_report import report_text
    from lmdynamics.saturation.analyze import detect_all
    series = _report_series()
    plain = series.frame[~series.frame.component.str.startswith("head_c")]
    series = Series("val_loss", series.rows, plain, {}, "plain")
    results = detect_all(series)
    text = report_text(results, series, [], 0.25, 0.2)
    assert "Mixture components" not in text and text.endswith("## Figures\n\n")
    rows = {r["model"]: r for r in markdown_table(text.splitlines(), "model")}
    assert rows["a-flat"]["saturated"] == "no" and rows["a-flat"]["er moved first"] == "n/a"  # curve not saturated
    assert rows["b-sat"]["saturated"] == "yes"
    assert rows["b-sat"]["kl_uniform moved first"] == "n/a"  # b-sat's head signals are all mixture rows: none here
    lines = {ln.split("**")[1]: ln for ln in text.splitlines() if ln.startswith("- **")}
    assert lines["b-sat"] == ("- **b-sat**: saturation detected; final +30.0% vs best (step 500), onset at step 700; "
                              "no head signal in the table (give --measures a table with head_rank rows).")


def test_each_kind_of_per_model_line(tmp_path):
    """Saturated or not, with head signals that moved, did not move, or are absent: the exact line of each."""
    from lmdynamics.report.saturation_report import report_text
    from lmdynamics.saturation.analyze import detect_all
    flat, rising = np.full(len(R_STEPS), 2.0), np.linspace(5, 3, len(R_STEPS))
    frame = pd.DataFrame(_rows("d-still", "val_loss", rising, "eval") + _rows("d-still", "kl_uniform", flat, "head")
                         + _rows("e-calm", "val_loss", R_LOSS, "eval") + _rows("e-calm", "kl_uniform", flat, "head")
                         + _rows("g-falls", "val_loss", rising, "eval")
                         + _rows("g-falls", "er", _degrading(up=False), "head")
                         + _rows("h-bare", "val_loss", rising, "eval")
                         + _rows("i-both", "val_loss", rising, "eval")
                         + _rows("i-both", "kl_uniform", _degrading(up=True, onset=600), "head")
                         + _rows("i-both", "er", _degrading(up=False), "head")
                         + _rows("j-calm", "val_loss", rising, "eval") + _rows("j-calm", "kl_uniform", flat, "head")
                         + _rows("j-calm", "er", flat, "head"))
    series = Series("val_loss", frame[frame.metric == "val_loss"], frame, {}, "kinds")
    text = report_text(detect_all(series), series, [], 0.1, 0.05)
    lines = [ln for ln in text.splitlines() if ln.startswith("- **")]
    assert lines == [
        f"- **d-still**: no saturation detected (final +0.0% vs best at step 1000); head signals did not move: {KL}.",
        "- **e-calm**: saturation detected; final +30.0% vs best (step 500), onset at step 700; no head signal moved "
        "first (not in the table: er, anisotropy).",
        f"- **g-falls**: no saturation detected (final +0.0% vs best at step 1000); head signals moved by more than "
        f"the margin: {ER} (from step 400).",
        "- **h-bare**: no saturation detected (final +0.0% vs best at step 1000).",
        f"- **i-both**: no saturation detected (final +0.0% vs best at step 1000); head signals moved by more than "
        f"the margin: {KL} (from step 600), {ER} (from step 400).",
        f"- **j-calm**: no saturation detected (final +0.0% vs best at step 1000); head signals did not move: {KL}, {ER}."]
