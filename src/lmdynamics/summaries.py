"""Numbers from the tidy table: convergence steps, PER-vs-convergence correlations, headline figures.

Pure table -> table functions. They read only the columns of the tidy table
(run, model, step, tokens, layer, component, metric, value; see ``lmdynamics.store``), never model files,
so a live training run's table and a multi-model Pythia analysis go through the same code.

Rows that still share (model, step, layer, component, metric) after ``store.read_table`` (which keeps the
latest value per run) come from several runs under one model name, e.g. seeds; they are averaged.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lmdynamics import catalogue

#: Per-layer weight matrices averaged into a layer's PER by default; "ov" is the mean over its heads.
WEIGHT_MATRICES = catalogue.WEIGHT_MATRICES
#: Metrics holding a loss (the catalogue's loss family), in the order the headline prefers them: held-out losses
#: (validation, a generic loss, the probe set's) before the training loss.
LOSS_METRICS = tuple(sorted((m.name for m in catalogue.CATALOGUE.values() if m.family == "loss"),
                            key=lambda name: name == "train_loss"))
#: Losses on text the model does not train on: a late rise of one of them is saturation.
HELD_OUT_LOSSES = tuple(m for m in LOSS_METRICS if m != "train_loss")
#: A correlation counts as significant when its two-sided p is below ALPHA over at least MIN_POINTS points.
ALPHA = 0.05
MIN_POINTS = 5
_OV_HEAD = re.compile(r"^ov_head\d+$")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kmbt])(?![a-z])")
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


# ----------------------------------------------------------------------------------------------- helpers
def is_head_component(component: str) -> bool:
    """True for per-head components such as ``ov_head03`` (left out of default figures and summaries)."""
    return bool(_OV_HEAD.match(component))


def short_name(model: str) -> str:
    """A model's display name: the hub id without its owner (``EleutherAI/pythia-70m`` -> ``pythia-70m``)."""
    return str(model).rstrip("/").rsplit("/", 1)[-1]


def model_size(model: str) -> float:
    """Parameter count parsed from a name such as ``pythia-1.4b-deduped`` (NaN when the name has none)."""
    match = _SIZE.search(short_name(model).lower())
    return float(match.group(1)) * _SCALE[match.group(2)] if match else math.nan


def model_order(frame: pd.DataFrame) -> list[str]:
    """The table's models from small to large: by the size in the name, then by layer count, then by name."""
    if frame.empty:
        return []
    layers = frame[frame["layer"] >= 0].groupby("model")["layer"].max() if "layer" in frame else {}
    models = list(pd.unique(frame["model"]))

    def key(m: str) -> tuple:
        size = model_size(m)
        return (math.isnan(size), size if not math.isnan(size) else 0.0, int(layers.get(m, -1)), m)

    return sorted(models, key=key)


def final_steps(frame: pd.DataFrame, total_steps: int | Mapping[str, int] | None = None) -> dict[str, int]:
    """Length of training per model: ``total_steps`` if given, else the largest step of the model in the table."""
    last = frame.groupby("model")["step"].max().astype(int).to_dict() if not frame.empty else {}
    if total_steps is None:
        return last
    if isinstance(total_steps, Mapping):
        return {m: int(total_steps.get(m, s)) for m, s in last.items()}
    return {m: int(total_steps) for m in last}


def select(
    frame: pd.DataFrame,
    metric: str | Iterable[str],
    component: str | Iterable[str] | None = None,
    layer: int | None = None,
    per_layer: bool | None = None,
) -> pd.DataFrame:
    """Rows of one or more metrics (and components), duplicates averaged; sorted by model, component, layer, step.

    ``per_layer=True`` keeps transformer layers (layer >= 0), ``False`` model-level rows (layer == -1).
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    rows = frame[frame["metric"].isin(metrics)]
    if component is not None:
        comps = [component] if isinstance(component, str) else list(component)
        rows = rows[rows["component"].isin(comps)]
    if layer is not None:
        rows = rows[rows["layer"] == layer]
    if per_layer is True:
        rows = rows[rows["layer"] >= 0]
    elif per_layer is False:
        rows = rows[rows["layer"] < 0]
    if "index" not in rows:
        rows = rows.assign(index=-1)
    keys = ["model", "metric", "component", "layer", "index", "step"]
    if rows.empty:
        return pd.DataFrame(columns=keys + ["tokens", "value"])
    out = rows.groupby(keys, as_index=False).agg(tokens=("tokens", "max"), value=("value", "mean"))
    return out.sort_values(["model", "component", "layer", "index", "step"], ignore_index=True)


def layer_components(frame: pd.DataFrame, metric: str, components: Sequence[str] | None = None) -> list[str]:
    """Per-layer components that carry ``metric`` (per-head ``ov_headNN`` left out unless asked for)."""
    rows = frame[(frame["metric"] == metric) & (frame["layer"] >= 0)]
    present = list(pd.unique(rows["component"]))
    if components is not None:
        return [c for c in components if c in present]
    order = ["ov", "attn", "mlp", "resid", "qkv", "dense", "mlp_in", "mlp_out"]
    present = [c for c in present if not is_head_component(c)]
    return sorted(present, key=lambda c: (order.index(c) if c in order else len(order), c))


def nearest_step(steps: Iterable[int], target: float) -> int:
    """The step closest to ``target`` (the earlier one on a tie)."""
    arr = np.array(sorted({int(s) for s in steps}))
    return int(arr[np.argmin(np.abs(arr - target))])


def loss_metrics(frame: pd.DataFrame) -> list[str]:
    """The loss metrics the table holds at model level (layer -1, component ``model``), in ``LOSS_METRICS`` order."""
    present = set(frame.loc[(frame["layer"] == -1) & (frame["component"] == "model") & frame["value"].notna(),
                            "metric"])
    return [m for m in LOSS_METRICS if m in present]


def correlation_verdict(p: float, n: int) -> str:
    """'significant' (p < ALPHA over n >= MIN_POINTS points), 'not significant' (with why), or why there is none."""
    if not np.isfinite(p):
        return "not computable (fewer than 3 points, or one side constant)"
    reasons = ([f"p ≥ {ALPHA}"] if p >= ALPHA else []) + ([f"n < {MIN_POINTS}"] if n < MIN_POINTS else [])
    return "significant" if not reasons else f"not significant ({', '.join(reasons)})"


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Pearson (r, p) and Spearman (rho, p); NaN when fewer than 3 points or either side is constant."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return (math.nan,) * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
    return float(pr.statistic), float(pr.pvalue), float(sr.statistic), float(sr.pvalue)


# ----------------------------------------------------------------------------------------------- summaries
def convergence_steps(
    frame: pd.DataFrame,
    threshold: float = 0.95,
    metric: str = "cka_final",
    total_steps: int | Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """First step after which ``metric`` stays >= ``threshold``, per (model, layer, component).

    The step is the start of the longest run of measurements at the end of training that all reach the
    threshold; a dip below it restarts the clock (a NaN value counts as a dip). ``fraction`` is that step
    over the model's training length (``total_steps``, else the model's largest step in the table).
    Never reaching it (the last measurement is below the threshold): ``step`` <NA>, ``fraction`` NaN,
    ``converged`` False. Note that with CKA-to-final the final step itself is 1 by construction, so a
    layer that only gets there at the end has fraction 1.0.

    Resolution: the layer reached the threshold for good somewhere after the measured step before ``step``
    (``previous_step``; 0 when ``step`` is the first measurement), so the fraction is only known to within
    ``resolution`` = (step - previous_step) / final_step: the measurement cadence around the crossing.
    Columns: model, layer, component, metric, threshold, step, previous_step, final_step, fraction,
    resolution, converged.
    """
    cols = ["model", "layer", "component", "metric", "threshold", "step", "previous_step", "final_step", "fraction",
            "resolution", "converged"]
    rows = select(frame, metric)
    if rows.empty:
        return pd.DataFrame(columns=cols)
    lengths = final_steps(frame, total_steps)
    out = []
    for (model, component, layer), group in rows.groupby(["model", "component", "layer"], sort=False):
        steps = group["step"].to_numpy()
        ok = np.nan_to_num(group["value"].to_numpy(dtype=float), nan=-np.inf) >= threshold
        stays = np.logical_and.accumulate(ok[::-1])[::-1]  # stays[i]: every value from i to the end passes
        at = int(np.argmax(stays))
        first = int(steps[at]) if stays[-1] else None
        previous = (int(steps[at - 1]) if at > 0 else 0) if first is not None else None
        total = lengths[model]
        fraction = first / total if first is not None and total > 0 else math.nan
        resolution = (first - previous) / total if first is not None and total > 0 else math.nan
        out.append((model, int(layer), component, metric, threshold, first, previous, total, fraction, resolution,
                    first is not None))
    result = pd.DataFrame(out, columns=cols)
    result["step"] = result["step"].astype("Int64")
    result["previous_step"] = result["previous_step"].astype("Int64")
    return result.sort_values(["model", "component", "layer"], ignore_index=True)


def layer_per(
    frame: pd.DataFrame,
    metric: str = "per",
    components: Sequence[str] | None = WEIGHT_MATRICES,
    step: str | int = "final",
) -> pd.DataFrame:
    """Each layer's PER as the mean over its weight matrices, per model. Columns: model, layer, per.

    Per-head ``ov_headNN`` values are first averaged into one "ov" matrix so that the heads count once.
    ``components=None`` takes every per-layer matrix present. ``step``: "final" (each model's last step
    with this metric), "mean" (the average over all measured steps) or a step number.
    """
    rows = select(frame, metric, per_layer=True)
    rows = rows.assign(component=rows["component"].map(lambda c: "ov" if is_head_component(c) else c))
    if components is not None:
        rows = rows[rows["component"].isin(list(components))]
    if rows.empty:
        return pd.DataFrame(columns=["model", "layer", "per"])
    if step == "final":
        last = rows.groupby("model")["step"].transform("max")
        rows = rows[rows["step"] == last]
    elif step != "mean":
        rows = rows[rows["step"] == int(step)]
        if rows.empty:
            raise ValueError(f"no {metric!r} rows at step {step}; pass step='final', 'mean' or a measured step")
    per_matrix = rows.groupby(["model", "layer", "component"], as_index=False)["value"].mean()
    out = per_matrix.groupby(["model", "layer"], as_index=False)["value"].mean()
    return out.rename(columns={"value": "per"})


def per_convergence_points(
    frame: pd.DataFrame,
    threshold: float = 0.95,
    cka_metric: str = "cka_final",
    cka_components: Sequence[str] | None = None,
    per_metric: str = "per",
    per_components: Sequence[str] | None = WEIGHT_MATRICES,
    per_step: str | int = "final",
    total_steps: int | Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """One point per (model, layer): its PER (see ``layer_per``) and its convergence fraction.

    The fraction is the mean over ``cka_components`` (default: every per-layer component but the per-head
    ones) of ``convergence_steps(...).fraction``; components that never converged are left out of the
    mean, and a layer with none converged is dropped. Columns: model, layer, per, fraction.
    """
    conv = convergence_steps(frame, threshold, cka_metric, total_steps)
    conv = conv[conv["layer"] >= 0]
    comps = layer_components(frame, cka_metric, cka_components)
    conv = conv[conv["component"].isin(comps)]
    per = layer_per(frame, per_metric, per_components, per_step)
    if conv.empty or per.empty:
        return pd.DataFrame(columns=["model", "layer", "per", "fraction"])
    frac = conv.groupby(["model", "layer"], as_index=False)["fraction"].mean()
    points = per.merge(frac, on=["model", "layer"], how="inner").dropna(subset=["per", "fraction"])
    return points.sort_values(["model", "layer"], ignore_index=True)


def per_vs_convergence(frame: pd.DataFrame, points: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:
    """Pearson and Spearman correlation between per-layer PER and convergence fraction (scipy.stats).

    One row per model, plus a pooled row ``model == "all"`` when there is more than one model.
    ``points``: the output of ``per_convergence_points`` if already computed; otherwise keyword arguments
    go to it. Columns: model, n, pearson_r, pearson_p, spearman_rho, spearman_p (NaN with fewer than 3
    points or a constant side).
    """
    if points is None:
        points = per_convergence_points(frame, **kwargs)
    cols = ["model", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"]
    groups = [(m, points[points["model"] == m]) for m in model_order(points)]
    if len(groups) > 1:
        groups.append(("all", points))
    rows = []
    for model, g in groups:
        x, y = g["per"].to_numpy(float), g["fraction"].to_numpy(float)
        rows.append((model, len(g), *_corr(x, y)))
    return pd.DataFrame(rows, columns=cols)


def _last_value(frame: pd.DataFrame, model: str, metric: str, component: str, layer: int) -> float:
    rows = select(frame[frame["model"] == model], metric, component, layer=layer)
    return float(rows["value"].iloc[-1]) if not rows.empty else math.nan


def last_layer_anisotropy(frame: pd.DataFrame) -> pd.DataFrame:
    """Anisotropy of the last layer over steps per model. Columns: model, step, tokens, value, source.

    Uses the final hidden state (component "final", layer -1) where measured, else the residual stream
    of the deepest layer ("resid"); ``source`` says which.
    """
    out = []
    for model in model_order(frame):
        own = frame[frame["model"] == model]
        rows = select(own, "anisotropy", "final", layer=-1)
        source = "final hidden state"
        if rows.empty:
            resid = select(own, "anisotropy", "resid", per_layer=True)
            if resid.empty:
                continue
            last = int(resid["layer"].max())
            rows, source = resid[resid["layer"] == last], f"resid layer {last}"
        out.append(rows[["model", "step", "tokens", "value"]].assign(source=source))
    if not out:
        return pd.DataFrame(columns=["model", "step", "tokens", "value", "source"])
    return pd.concat(out, ignore_index=True)


def headline(
    frame: pd.DataFrame,
    threshold: float = 0.95,
    at_fraction: float = 0.2,
    cka_metric: str = "cka_final",
    total_steps: int | Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """The short table of headline numbers, one row per model (small to large); NaN where not measured.

    Columns: model, final_step, final_tokens, loss_metric, final_loss, best_loss, best_loss_step,
    cka_step (the measured step nearest ``at_fraction`` of training), cka_at_fraction (mean over layers
    and per-layer components of ``cka_metric`` there), median_convergence (median over (layer, component)
    of the convergence fraction, a never-converged one counting as +inf), never_converged (their count),
    head_per, head_kl_uniform (the head's last values), anisotropy (last layer, last value; see
    ``last_layer_anisotropy``).
    """
    lengths = final_steps(frame, total_steps)
    conv = convergence_steps(frame, threshold, cka_metric, total_steps)
    conv = conv[(conv["layer"] >= 0) & ~conv["component"].map(is_head_component)]
    aniso = last_layer_anisotropy(frame)
    rows = []
    for model in model_order(frame):
        own = frame[frame["model"] == model]
        row: dict = {"model": model, "final_step": lengths[model], "final_tokens": int(own["tokens"].max())}
        row.update(loss_metric=None, final_loss=math.nan, best_loss=math.nan, best_loss_step=pd.NA)
        for name in LOSS_METRICS:
            loss = select(own, name, "model", layer=-1).dropna(subset=["value"])
            if not loss.empty:
                best = loss.loc[loss["value"].idxmin()]
                row.update(loss_metric=name, final_loss=float(loss["value"].iloc[-1]),
                           best_loss=float(best["value"]), best_loss_step=int(best["step"]))
                break
        cka = select(own, cka_metric, layer_components(own, cka_metric), per_layer=True)
        if cka.empty:
            row.update(cka_step=pd.NA, cka_at_fraction=math.nan)
        else:
            step = nearest_step(cka["step"], at_fraction * lengths[model])
            row.update(cka_step=step, cka_at_fraction=float(cka.loc[cka["step"] == step, "value"].mean()))
        mine = conv[conv["model"] == model]
        fractions = mine["fraction"].fillna(np.inf).to_numpy(float)
        row["median_convergence"] = float(np.median(fractions)) if len(fractions) else math.nan
        row["never_converged"] = int((~mine["converged"].astype(bool)).sum())
        row["head_per"] = _last_value(own, model, "per", "head", -1)
        row["head_kl_uniform"] = _last_value(own, model, "kl_uniform", "head", -1)
        a = aniso[aniso["model"] == model]
        row["anisotropy"] = float(a["value"].iloc[-1]) if not a.empty else math.nan
        rows.append(row)
    result = pd.DataFrame(rows)
    for col in ("best_loss_step", "cka_step"):
        if col in result:
            result[col] = result[col].astype("Int64")
    return result
