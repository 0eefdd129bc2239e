"""CKA-to-final of a training run from its stored probe activations, and the per-layer convergence summary.

Used at the end of fit by ``ActivationConvergence`` and as a command on any run:
``lmdynamics convergence runs/demo``. Rows: ``cka_final`` (biased linear CKA; ``cka_final_debiased``
with the unbiased-HSIC estimator) per stored step, and ``converged_fraction`` per (layer, component) at
the final step: the first step after which CKA-to-final stays >= the threshold, over the training length
(NaN if it never does before the end).
"""

from __future__ import annotations

import math
import os

import pandas as pd

from .. import store
from ..layout import RunLayout, tokens_at
from ..measure import cka_rows, tag_rows
from ..probes import load_activations
from .summaries import convergence_steps


#: Rows computed once training ends, from the final step: a resumed run recomputes them, so it drops them first.
END_OF_RUN_METRICS = ("cka_final", "cka_final_debiased", "converged_fraction")


def finalize_run(run: str | os.PathLike, threshold: float = 0.95, debiased: bool = False) -> dict | None:
    """Write cka_final rows for every stored step (the newest stored step is "final") and the summary.

    Idempotent: the rows replace any written before (a second call, a resumed run), so every reader sees one
    row per key."""
    layout = RunLayout(run)
    info = layout.info()
    steps = layout.activation_steps()
    if not steps:
        raise FileNotFoundError(f"{layout.activations} holds no stored probe activations; train with the convergence callback's store_activations on")
    final_step, final_path = steps[-1]
    final = load_activations(final_path)
    rows = []
    for step, path in steps:
        acts = final if step == final_step else load_activations(path)
        rows += tag_rows(cka_rows(acts, final, "cka_final", debiased), info["run"], info["model"], step,
                         tokens_at(step, info["tokens_per_step"]))
    frame = store.to_frame(rows)
    summary = convergence_steps(frame, threshold=threshold, metric="cka_final", total_steps=final_step)
    summary_rows = [
        {"layer": int(r.layer), "component": r.component, "metric": "converged_fraction",
         "value": float(r.fraction) if r.converged else math.nan}
        for r in summary.itertuples()
    ]
    summary_frame = store.to_frame(tag_rows(summary_rows, info["run"], info["model"], final_step, tokens_at(final_step, info["tokens_per_step"])))
    store.replace(layout.table, pd.concat([frame, summary_frame], ignore_index=True))
    main = summary[summary.component == "mlp"] if (summary.component == "mlp").any() else summary
    fractions = ", ".join(f"L{int(r.layer)} {r.fraction:.2f}" if r.converged else f"L{int(r.layer)} never"
                          for r in main.itertuples())
    line = f"first step with CKA-to-final staying >= {threshold} as a fraction of training ({main.component.iloc[0]}): {fractions}"
    return {"steps": len(steps), "final_step": final_step, "line": line, "summary": summary}
