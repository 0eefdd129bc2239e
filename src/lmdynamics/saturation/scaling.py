"""Scaling-law gap (Godey et al. 2024, section 3 of docs/science.md): how far each model's final and best
checkpoints sit above the loss a scaling law fitted on large models predicts.

L(N, T) = A / N^alpha + B / T^beta + E  (Hoffmann et al. 2022), with N parameters and T training tokens.
Following Godey et al., B, beta and E are fixed (by default to the values they use: B = 410.7, beta = 0.28,
E = 1.69) and A, alpha are fitted on the checkpoints of the models the user names as large (those at or
after ``min_fraction`` of training: the law describes trained models, not the first steps). The fit
minimises the squared relative error (pred / obs - 1), started from the exact log-linear solution of
log(L - E - B/T^beta) = log A - alpha log N. A model's gap at a checkpoint is L_obs / L(N, T) - 1.

Losses: a metric whose name says perplexity (``ppl``, ``perplexity``) is turned into a loss by ln; any
other metric is taken as a loss as it is (it must be lower-is-better).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from lmdynamics.models.sizes import PYTHIA_SIZES, pythia_parameter_count

PAPER_FIXED = {"B": 410.7, "beta": 0.28, "E": 1.69}
PAPER_FIT = {"A": 119.09, "alpha": 0.246}  # Godey et al.'s A, alpha on large Pythia models (for comparison)


class ScalingError(ValueError):
    """A fit that cannot be made (no large model, unknown parameter count, missing tokens)."""


@dataclass(frozen=True)
class Law:
    A: float
    alpha: float
    B: float = PAPER_FIXED["B"]
    beta: float = PAPER_FIXED["beta"]
    E: float = PAPER_FIXED["E"]

    def __call__(self, n, t):
        n, t = np.asarray(n, dtype=float), np.asarray(t, dtype=float)
        return self.A / n**self.alpha + self.B / t**self.beta + self.E


def fit(n: Iterable[float], t: Iterable[float], loss: Iterable[float], B: float = PAPER_FIXED["B"],
        beta: float = PAPER_FIXED["beta"], E: float = PAPER_FIXED["E"]) -> Law:
    """A and alpha of L(N, T) with B, beta, E fixed, by least squares on the relative error."""
    n, t, y = (np.asarray(list(v), dtype=float) for v in (n, t, loss))
    rest = y - E - B / t**beta
    if len(set(n.tolist())) < 2:
        raise ScalingError("fitting A and alpha needs checkpoints of at least two model sizes among the large models")
    if (rest <= 0).any():
        raise ScalingError("some large-model losses are at or below E + B/T^beta: the fixed B, beta, E cannot "
                           "describe them (pass other --scaling_fixed values, or other large models)")
    slope, intercept = np.polyfit(np.log(n), np.log(rest), 1)
    x0 = np.array([intercept, -slope])  # (log A, alpha)

    def residual(p):
        return (np.exp(p[0]) / n ** p[1] + B / t**beta + E) / y - 1.0

    sol = least_squares(residual, x0, method="lm", xtol=1e-14, ftol=1e-14)
    return Law(float(np.exp(sol.x[0])), float(sol.x[1]), B, beta, E)


def pythia_parameters(model: str) -> int | None:
    """Parameter count of a Pythia model named ``[org/]pythia-<size>[-deduped|-v0|...]``, else None."""
    m = re.search(r"pythia-(?:v1\.1-)?(\d+(?:\.\d+)?[mb])(?![\w.])", model.lower())
    if not m or m.group(1) not in PYTHIA_SIZES:
        return None
    size = PYTHIA_SIZES[m.group(1)]
    return pythia_parameter_count(size.layers, size.d_model, size.vocab)


def as_loss(metric: str, values: pd.Series) -> pd.Series:
    """Loss from a metric: ln of a perplexity, the values themselves otherwise."""
    base = metric.rsplit("/", 1)[-1]
    return np.log(values) if re.search(r"ppl|perplexity", base) else values


def gaps(rows: pd.DataFrame, metric: str, large: Iterable[str], params: Mapping[str, float] | None = None,
         fixed: Mapping[str, float] | None = None, min_fraction: float = 0.1) -> tuple[Law, pd.DataFrame]:
    """Fit the law on the ``large`` models' rows (columns model, step, tokens, value) and return it with
    one row per model: N, best/final step, loss, prediction and relative gap (obs / pred - 1)."""
    params = dict(params or {})
    fixed = {**PAPER_FIXED, **(fixed or {})}
    frame = rows.assign(loss=as_loss(metric, rows.value))
    large = list(large)
    missing = sorted(set(large) - set(frame.model))
    if missing:
        raise ScalingError(f"large model(s) {missing} have no rows; models with rows: {sorted(set(frame.model))}")
    sizes = {}
    for model in sorted(set(frame.model)):
        n = params.get(model) or pythia_parameters(model)
        if not n:
            raise ScalingError(f"parameter count of {model!r} unknown; pass --params {model}=N")
        sizes[model] = float(n)
    frame = frame[frame.step > 0]  # T = 0 is outside the law
    if (frame.tokens <= 0).any():
        raise ScalingError("rows without token counts (tokens <= 0 at step > 0); pass --tokens_per_step")
    frame = frame.assign(N=frame.model.map(sizes))
    frame = frame[frame.step >= min_fraction * frame.groupby("model").step.transform("max")]
    train = frame[frame.model.isin(large)]
    law = fit(train.N, train.tokens, train.loss, **fixed)
    out = []
    for model, own in frame.groupby("model", sort=True):
        own = own.sort_values("step")
        best = own.loc[own.loss.idxmin()]
        final = own.iloc[-1]
        rec = {"model": model, "N": sizes[model], "large": model in large}
        for tag, r in (("final", final), ("best", best)):
            pred = float(law(r.N, r.tokens))
            rec.update({f"{tag}_step": int(r.step), f"{tag}_tokens": int(r.tokens), f"{tag}_loss": float(r.loss),
                        f"{tag}_predicted": pred, f"{tag}_gap": float(r.loss) / pred - 1.0})
        out.append(rec)
    return law, pd.DataFrame(out)
