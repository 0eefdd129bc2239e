"""The W-error curve and the rank-constrained head as tidy-table rows (``OUT/metrics.parquet``, beside their CSV),
so every tool that reads the table reads them too. Metrics (declared in ``lmdynamics.catalogue``), all at layer -1:

- ``w_error``: component ``corpus``, ``index`` = d; run = the corpus, model = ``<n>-gram, min count <m>``,
  step 0 (a corpus has no training step);
- ``lowrank_head_loss``: component ``head``, ``index`` = r; ``full_head_loss`` (the checkpoint's own head) and
  ``full_head_trained_loss`` (a full V x d head trained like the rank-r ones) at ``index`` -1. Run, model, step
  and tokens are the checkpoint's: from its run's ``run.json`` when it lies in ``<run>/checkpoints/stepN``, else
  the directory's name (step parsed from a ``stepN`` name, else 0).

A rerun writing the same keys replaces the old rows (``store.replace``). ``werror_curves`` and ``lowrank_results``
read them back from any table in the form the figures take (``lmdynamics.report.run_report`` draws them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .. import store
from ..layout import parse_step_name, tokens_at

__all__ = ["werror_rows", "lowrank_rows", "checkpoint_identity", "write_rows", "werror_curves", "lowrank_results"]


def werror_rows(curve: dict[int, float], corpus: str, n: int, min_count: int) -> list[dict]:
    model = f"{n}-gram, min count {min_count}"
    return [dict(run=corpus, model=model, step=0, tokens=0, layer=-1, component="corpus", metric="w_error",
                 index=int(d), value=float(v)) for d, v in curve.items()]


def checkpoint_identity(checkpoint: str | os.PathLike) -> dict:
    """``run``, ``model``, ``step`` and ``tokens`` of a checkpoint directory (see the module docstring)."""
    checkpoint = Path(checkpoint).resolve()
    step = parse_step_name(checkpoint.name)
    run_json = checkpoint.parent.parent / "run.json"
    if checkpoint.parent.name == "checkpoints" and run_json.is_file():
        meta = json.loads(run_json.read_text())
        run = meta.get("run") or checkpoint.parent.parent.name
        return {"run": run, "model": meta.get("model") or run, "step": step or 0,
                "tokens": tokens_at(step or 0, meta.get("tokens_per_step") or 0)}
    return {"run": checkpoint.name, "model": checkpoint.name, "step": step or 0, "tokens": 0}


def lowrank_rows(result: dict, checkpoint: str | os.PathLike) -> list[dict]:
    """Rows of ``lowrank_head.sweep``'s result for a checkpoint."""
    base = dict(checkpoint_identity(checkpoint), layer=-1, component="head")
    rows = [dict(base, metric="lowrank_head_loss", index=int(r), value=float(v)) for r, v in result["ranks"].items()]
    rows.append(dict(base, metric="full_head_loss", index=store.NO_INDEX, value=float(result["full"])))
    if "full_trained" in result:
        rows.append(dict(base, metric="full_head_trained_loss", index=store.NO_INDEX, value=float(result["full_trained"])))
    return rows


def write_rows(out: str | os.PathLike, rows: list[dict]) -> Path:
    """Append the rows to ``out/metrics.parquet`` (replacing rows of the same keys); returns the table."""
    path = store.table_path(out)
    store.replace(path, rows)
    return path


def werror_curves(frame: pd.DataFrame) -> dict[tuple[str, str], dict[int, float]]:
    """``{(run, model): {d: W-error(d)}}`` of the table's ``w_error`` rows."""
    rows = frame[frame["metric"] == "w_error"].sort_values("index")
    return {key: dict(zip(g["index"].astype(int), g["value"].astype(float)))
            for key, g in rows.groupby(["run", "model"], sort=True)}


def lowrank_results(frame: pd.DataFrame) -> dict[tuple[str, str, int], dict]:
    """``{(run, model, step): result}`` of the table's rank-constrained-head rows, ``result`` as
    ``lowrank_head.sweep`` returns it (``ranks`` {r: loss}, ``full``, and ``full_trained`` when recorded)."""
    rows = frame[frame["component"].eq("head") & frame["metric"].isin(
        ["lowrank_head_loss", "full_head_loss", "full_head_trained_loss"])]
    out = {}
    for (run, model, step), g in rows.groupby(["run", "model", "step"], sort=True):
        ranks = g[g["metric"] == "lowrank_head_loss"].sort_values("index")
        full = g.loc[g["metric"] == "full_head_loss", "value"]
        if ranks.empty or full.empty:
            continue
        result = {"ranks": dict(zip(ranks["index"].astype(int), ranks["value"].astype(float))), "full": float(full.iloc[-1])}
        trained = g.loc[g["metric"] == "full_head_trained_loss", "value"]
        if len(trained):
            result["full_trained"] = float(trained.iloc[-1])
        out[(run, model, int(step))] = result
    return out
