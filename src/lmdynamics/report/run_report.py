"""A Markdown report from the tidy table: every figure the table supports, headline numbers, one sentence each.

``write_report`` works unchanged on a live training run's table (one model, our steps) and on a
multi-model Pythia analysis table: figures whose rows are missing are listed as not drawn, with why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lmdynamics import catalogue, store
from lmdynamics.store import load_table
from lmdynamics.report import figures as P
from lmdynamics import summaries as S
from lmdynamics.atomic import write_text_atomic



@dataclass
class _Entry:
    section: str
    path: Path
    text: str


def _fmt(value, digits: int = 3) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if math.isinf(value):
            return "never"
        return f"{value:.{digits}g}" if abs(value) < 1e4 else P.fmt_count(value)
    if isinstance(value, (int,)) or hasattr(value, "__int__"):
        return P.fmt_count(int(value)) if abs(int(value)) >= 1e4 else str(int(value))
    return str(value)


def headline_markdown(table: pd.DataFrame, threshold: float, at_fraction: float, cka_metric: str) -> str:
    """The headline table (``summaries.headline``) as Markdown."""
    head = S.headline(table, threshold=threshold, at_fraction=at_fraction, cka_metric=cka_metric)
    used = sorted({m for m in head["loss_metric"] if isinstance(m, str)}) if not head.empty else []
    # the header names the loss when every model reports the same one; otherwise each cell names its own
    loss = f"{catalogue.label(used[0]).split(' (')[0]} `{used[0]}`" if len(used) == 1 else "loss (named in each cell)"

    def final_loss(r) -> str:
        if not isinstance(r["loss_metric"], str):
            return "—"
        return _fmt(r["final_loss"]) + (f" ({r['loss_metric']})" if len(used) > 1 else "")

    cols = [
        ("model", "model", lambda r: S.short_name(r["model"])),
        ("final step", "final_step", None),
        ("tokens", "final_tokens", None),
        (f"final {loss}", "final_loss", final_loss),
        (f"best {loss} (step)", "best_loss", lambda r: f"{_fmt(r['best_loss'])} ({_fmt(r['best_loss_step'])})"
         if isinstance(r["loss_metric"], str) else "—"),
        (f"mean CKA-to-final at ~{at_fraction:.0%} (step)", "cka_at_fraction",
         lambda r: f"{_fmt(r['cka_at_fraction'])} ({_fmt(r['cka_step'])})" if pd.notna(r["cka_step"]) else "—"),
        (f"median fraction to stay ≥ {threshold}; components that never do", "median_convergence",
         lambda r: f"{_fmt(r['median_convergence'])}; {_never(r['never_converged'])}"
         if not (isinstance(r["median_convergence"], float) and math.isnan(r["median_convergence"])) else "—"),
        ("head PER", "head_per", None),
        ("head KL-to-uniform", "head_kl_uniform", None),
        ("last-layer anisotropy", "anisotropy", None),
    ]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in head.iterrows():
        cells = [(f(r) if f else _fmt(r[key])) for _, key, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def correlation_markdown(table: pd.DataFrame, threshold: float, cka_metric: str) -> str:
    """The PER-vs-convergence correlations as Markdown ('' when they cannot be computed)."""
    corr = S.per_vs_convergence(table, threshold=threshold, cka_metric=cka_metric)
    if corr.empty or corr["n"].sum() == 0:
        return ""
    lines = ["| model | layers (n) | Pearson r (p) | Spearman ρ (p) | verdict |", "|---|---|---|---|---|"]
    for _, r in corr.iterrows():
        name = "all models" if r["model"] == "all" else S.short_name(r["model"])
        verdicts = {S.correlation_verdict(r["pearson_p"], r["n"]), S.correlation_verdict(r["spearman_p"], r["n"])}
        verdict = verdicts.pop() if len(verdicts) == 1 else (f"Pearson {S.correlation_verdict(r['pearson_p'], r['n'])}, "
                                                             f"Spearman {S.correlation_verdict(r['spearman_p'], r['n'])}")
        lines.append(f"| {name} | {r['n']} | {_fmt(r['pearson_r'])} ({_fmt(r['pearson_p'], 2)}) | "
                     f"{_fmt(r['spearman_rho'])} ({_fmt(r['spearman_p'], 2)}) | {verdict} |")
    lines += ["", f"A correlation counts as significant when its two-sided p < {S.ALPHA} over at least "
                  f"{S.MIN_POINTS} layers; with fewer layers, or a larger p, it is no evidence either way."]
    return "\n".join(lines)


def resolution_note(frame: pd.DataFrame, threshold: float, cka_metric: str) -> str:
    """One sentence on how finely the measured steps resolve the convergence fractions ('' without crossings)."""
    conv = S.convergence_steps(frame, threshold, cka_metric)
    conv = conv[(conv["layer"] >= 0) & conv["converged"].astype(bool)]
    if conv.empty:
        return ""
    worst = conv.loc[conv["resolution"].idxmax()]
    return (f"Resolution: a layer crossed somewhere after the measured step before the one shown, so each fraction is "
            f"known only to within the gap between those two steps; the largest such gap here is "
            f"{worst['resolution']:.2g} of training (steps {worst['previous_step']} → {worst['step']} of "
            f"{worst['final_step']}{', ' + S.short_name(worst['model']) if conv['model'].nunique() > 1 else ''}).")


def write_report(table: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike, threshold: float = 0.95,
                 at_fraction: float = 0.2) -> Path:
    """Draw every figure the table supports into ``out_dir/figures/`` and write ``out_dir/report.md``.

    ``table``: a DataFrame, a ``metrics.parquet`` directory or a directory holding one. Returns the
    report's path. Raises FileNotFoundError / ValueError (one line) if the table is missing or empty.
    """
    frame = load_table(table)
    out_dir = Path(out_dir)
    figdir = out_dir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    entries: list[_Entry] = []
    skipped: list[str] = []
    models = S.model_order(frame)
    many = len(models) > 1

    def draw(section: str, fn: Callable, name: str, text: str, *args, **kwargs) -> None:
        path = fn(frame, figdir / f"{name}.png", *args, on_skip=skipped.append, **kwargs)
        if path is not None:
            entries.append(_Entry(section, path, text))

    def per_model(metric_rows: pd.DataFrame) -> list[str]:
        return [m for m in models if m in set(metric_rows["model"])]

    present = set(frame["metric"])
    # the CKA-to-final variant behind the convergence summaries: biased if measured, else the debiased one
    cka_metric = "cka_final" if "cka_final" in present else "cka_final_debiased"
    ctx = _Context(frame, draw, per_model, skipped, figdir, entries, threshold, at_fraction, many, cka_metric)
    for family_name, family in catalogue.FAMILIES.items():  # the catalogue says what is drawn, in this order
        for measurement in catalogue.figured(family_name):
            variants = [measurement.name] + ([f"grad_{measurement.name}"] if measurement.reads == "spectrum" else [])
            for metric in variants:
                if metric not in present:
                    if metric == family.required:
                        skipped.append(f"{metric.upper()} figures ({measurement.label}): no '{metric}' rows in the table")
                    continue
                for kind in family.kinds:
                    FIGURE_KINDS[kind](draw, per_model, frame, family.section, measurement, metric,
                                       threshold=threshold, at_fraction=at_fraction, many=many)
        for name in family.combined:
            COMBINED_FIGURES[name](ctx, family.section)

    runs = ", ".join(map(str, pd.unique(frame["run"])))
    intro = (f"Models: {', '.join(S.short_name(m) for m in models)}. Runs: {runs}. {len(frame):,} rows. "
             "Drawn from the tidy table only.")
    variants = ("CKA variants: `cka_final` is linear CKA with the biased HSIC estimator; `cka_final_debiased` "
                "uses the unbiased HSIC estimator. Every caption says which one it shows.")
    notes = (f"Convergence: the first measured step after which {P.cka_label(cka_metric)} stays ≥ {threshold}, "
             "as a fraction of the model's last step in the table; the median runs over layers and components "
             f"(a never-converged one counts as later than all). {resolution_note(frame, threshold, cka_metric)} "
             "Loss columns: the first of " + ", ".join(f"`{m}`" for m in S.LOSS_METRICS)
             + " the table holds (held-out losses before the training loss), named in the column header: "
             + "; ".join(f"`{m}` is the {catalogue.label(m)}" for m in S.loss_metrics(frame)) + ".")
    lines = ["# Training dynamics report", "", intro, "", variants, "", "## Headline numbers", "",
             headline_markdown(frame, threshold, at_fraction, cka_metric), "", notes, ""]
    corr = correlation_markdown(frame, threshold, cka_metric)
    if corr:
        lines += ["### PER vs convergence", "", corr, ""]
    current = None
    for e in entries:
        if e.section != current:
            lines += [f"## {e.section}", ""]
            current = e.section
        rel = e.path.relative_to(out_dir).as_posix()
        lines += [f"![{e.path.stem}]({rel})", "", e.text, ""]
    if skipped:
        lines += ["## Not drawn", ""] + [f"- {s}" for s in skipped] + [""]
    report = out_dir / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report


def _never(count) -> str:
    """'none', '1 component', '3 components': the never-converged count of the headline, in words."""
    count = int(count)
    return "none" if count == 0 else f"{count} component{'s' if count != 1 else ''}"


def figures_for_run(run_dir: str | os.PathLike, threshold: float = 0.95) -> Path:
    """The report of one training run: ``<run>/metrics.parquet`` -> ``<run>/report/report.md``."""
    run_dir = Path(run_dir)
    return write_report(store.table_path(run_dir), run_dir / "report", threshold=threshold)


# ------------------------------------------------------------------ figure kinds of the catalogue's families
def _what(metric: str) -> str:
    return "gradients" if metric.startswith("grad_") else "weights"


def _over_steps(draw, per_model, frame, section, m, metric, **_):
    for model in per_model(S.select(frame, metric)):
        draw(section, P.plot_rank_over_steps, f"{metric}_steps__{P.slug(model)}",
             f"{S.short_name(model)}: {m.label} ({m.description}) of the {_what(metric)} of every layer over training, "
             f"one panel per matrix (OV averaged over heads).", model=model, metric=metric)


def _by_layer(draw, per_model, frame, section, m, metric, many=False, **_):
    draw(section, P.plot_rank_by_layer, f"{metric}_layers",
         f"{m.label} of the {_what(metric)} per layer at each model's last measured step"
         + (", one line per model." if many else "."), metric=metric)


def _lines(draw, per_model, frame, section, m, metric, threshold=0.95, **_):
    label = P.cka_label(metric)
    for model in per_model(S.select(frame, metric, per_layer=True)):
        draw(section, P.plot_cka_lines, f"{metric}_lines__{P.slug(model)}",
             f"{S.short_name(model)}: {label} of every layer over training steps (log axis), one panel per component; "
             f"a layer has converged once its line stays above the dashed {threshold}.",
             model=model, metric=metric, threshold=threshold)


def _heatmap(draw, per_model, frame, section, m, metric, threshold=0.95, **_):
    label = P.cka_label(metric)
    for model in per_model(S.select(frame, metric, per_layer=True)):
        settles = ("; one column per measured step, colour midpoint at {t} (blue above, red below), so each row shows "
                   "when that layer settles.") if m.family == "cka" else ", colour midpoint at {t}."
        draw(section, P.plot_cka_heatmap, f"{metric}_heatmap__{P.slug(model)}",
             f"{S.short_name(model)}: layer × step heatmap of {label}" + settles.format(t=threshold),
             model=model, metric=metric, threshold=threshold)


def _box(draw, per_model, frame, section, m, metric, threshold=0.95, at_fraction=0.2, many=False, **_):
    label = P.cka_label(metric)
    spread = (f"Per model, the spread over layers of {label} at the measured step nearest {at_fraction:.0%} of "
              f"training (one dot per layer)")
    draw(section, P.plot_cka_box, f"{metric}_box",
         spread + (": larger models should sit higher and tighter." if many else
                   f": how far each layer still is from its final representation at that point (1 = there, "
                   f"dashed {threshold} = converged) and how much the layers differ."),
         metric=metric, at_fraction=at_fraction, threshold=threshold)


def _convergence(draw, per_model, frame, section, m, metric, threshold=0.95, **_):
    draw(section, P.plot_convergence_fraction, f"{metric}_convergence",
         f"Per layer, the first measured step after which {P.cka_label(metric)} stays ≥ {threshold}, as a fraction of "
         f"training (× marks a layer that never stays there). {resolution_note(frame, threshold, metric)}",
         metric=metric, threshold=threshold)


#: Figure kind (``catalogue.FAMILIES``) -> the function that draws it for one metric of the table.
FIGURE_KINDS: dict[str, Callable] = {"over_steps": _over_steps, "by_layer": _by_layer, "lines": _lines,
                                     "heatmap": _heatmap, "box": _box, "convergence": _convergence}


# ------------------------------------------------------------------ the families' combined figures
@dataclass
class _Context:
    """What a combined figure needs of the report being written."""

    frame: pd.DataFrame
    draw: Callable
    per_model: Callable
    skipped: list
    figdir: Path
    entries: list
    threshold: float
    at_fraction: float
    many: bool
    cka_metric: str


def _losses(c: _Context, section: str) -> None:
    c.draw(section, P.plot_loss, "loss", P.loss_caption(c.frame))


def _training_health(c: _Context, section: str) -> None:
    if c.frame["metric"].isin(["lr", "grad_norm"]).any():  # a training run's table (an offline analysis has none)
        c.draw(section, P.plot_training_health, "training_health", P.training_health_caption(c.frame))


def _per_vs_convergence(c: _Context, section: str) -> None:
    c.draw(section, P.plot_per_vs_convergence, "per_vs_convergence",
           f"Each layer's PER (mean over its weight matrices) against the fraction of training it needs to stay "
           f"≥ {c.threshold} in {P.cka_label(c.cka_metric)}; Pearson and Spearman correlations in the title.",
           threshold=c.threshold, cka_metric=c.cka_metric)


def _head_spectrum(c: _Context, section: str) -> None:
    rows = pd.concat([S.select(c.frame, "sv_norm", "head", layer=-1), S.select(c.frame, "kl_uniform", "head", layer=-1)])
    if rows.empty:
        c.skipped.append("head figures: no 'sv_norm' or 'kl_uniform' rows of the head")
    for m in c.per_model(rows):
        c.draw(section, P.plot_head_spectrum, f"head_spectrum__{P.slug(m)}",
               f"{S.short_name(m)}: the head's singular values divided by the largest, one curve per measured step "
               f"(colour = step), and KL(s / Σs ‖ uniform) over training; a collapse of the tail and a jump of "
               f"the KL mark the softmax bottleneck.", model=m)


def _kl_across_models(c: _Context, section: str) -> None:
    if c.many:
        c.draw(section, P.plot_kl_uniform, "kl_uniform",
               "KL-to-uniform of the head's normalised singular values over training, per model.")


def _anisotropy_over_steps(c: _Context, section: str) -> None:
    c.draw(section, P.plot_anisotropy_over_steps, "anisotropy_steps",
           "Anisotropy (mean pairwise cosine similarity) of the last layer's representations of the probe over "
           "training.")


def _anisotropy_by_layer(c: _Context, section: str) -> None:
    c.draw(section, P.plot_anisotropy_by_layer, "anisotropy_layers",
           "Anisotropy per layer at the first (dotted) and last (solid) measured step.")


def _werror(c: _Context, section: str) -> None:
    """W-error curves in the table (``saturation.rows``), one figure each."""
    from lmdynamics.report.figures.bottleneck import plot_werror
    from lmdynamics.saturation.rows import werror_curves

    for (run, model), curve in werror_curves(c.frame).items():
        path = plot_werror(curve, c.figdir / f"werror__{P.slug(f'{run}_{model}')}.png", title=f"W-error of {run} ({model})")
        c.entries.append(_Entry(section, path, f"W-error(d) of the next-token matrix of {run}'s {model} contexts: the "
                                               "share of it (relative Frobenius error) no rank-d head can represent."))


def _lowrank_head(c: _Context, section: str) -> None:
    """Rank-constrained-head sweeps in the table (``saturation.rows``), one figure each."""
    from lmdynamics.report.figures.bottleneck import plot_lowrank_head
    from lmdynamics.saturation.rows import lowrank_results

    for (run, model, step), result in lowrank_results(c.frame).items():
        path = plot_lowrank_head(result, c.figdir / f"lowrank_head__{P.slug(f'{run}_{step}')}.png",
                                 f"{S.short_name(model)} at step {step}: head W = A B of rank r")
        c.entries.append(_Entry(section, path, f"{S.short_name(model)} at step {step}: loss with the backbone frozen "
                                               "and a head of rank r trained, against the full-rank head (dashed)."))


#: Combined figure (``catalogue.FAMILIES``) -> the function that draws it into the report being written.
COMBINED_FIGURES: dict[str, Callable] = {
    "losses": _losses, "training_health": _training_health, "per_vs_convergence": _per_vs_convergence,
    "head_spectrum": _head_spectrum, "kl_across_models": _kl_across_models,
    "anisotropy_over_steps": _anisotropy_over_steps, "anisotropy_by_layer": _anisotropy_by_layer,
    "werror": _werror, "lowrank_head": _lowrank_head,
}
