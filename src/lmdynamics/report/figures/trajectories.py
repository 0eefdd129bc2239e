"""The trajectory study's score figure: perplexity of generated text against validation perplexity, per model
over its checkpoints (``trajectories score``'s ``scores.csv``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lmdynamics.report.figures.common import save


def plot_generated_ppl(frame: pd.DataFrame, path: Path) -> Path:
    """One line per model: (val_ppl, generated_ppl) at each scored checkpoint, both axes log, validation perplexity
    decreasing to the right (training proceeds left to right)."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for model, r in frame.groupby("model", sort=True):
        r = r.sort_values("step")
        ax.plot(r["val_ppl"], r["generated_ppl"], marker=".", label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("validation perplexity")
    ax.set_ylabel("perplexity of the generated text")
    ax.legend(fontsize=7)
    return save(fig, path)
