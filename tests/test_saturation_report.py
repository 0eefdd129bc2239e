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
    rows = loss_rows(seed=1)
    report = write(tmp_path / "out", series_of(rows), min_fraction=0.2, large=LARGE, params=SIZES)
    text = report.read_text()
    section = text[text.index("\n## Scaling-law gap"):]  # from the blank line before the heading
    check_section(section, rows, 0.2)
    assert "![scaling_law](figures/scaling_law.png)" in section
    assert (tmp_path / "out" / "figures" / "scaling_law.png").is_file()
    csv = pd.read_csv(tmp_path / "out" / "scaling.csv").set_index("model")
    a_ref, alpha_ref = reference_fit(rows, 0.2)
    for model, want in reference_gaps(rows, a_ref, alpha_ref, 0.2).items():
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
