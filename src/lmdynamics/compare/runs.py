"""The runs of a comparison: find and read them (tidy table, run.json, resolved config) and their final numbers,
CKA-to-final per layer and step. Reads each run's files only, never model files; tables are read in parallel
threads (Arrow releases the GIL), only the rows the comparison uses (``METRICS``)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from lmdynamics import catalogue, store
from lmdynamics.catalogue import head_series
from lmdynamics.compare import grouping

LOSS, VAL_LOSS, EXCESS = "train_loss", "val_loss", "excess_loss"
HEAD_ER, HEAD_KL, CKA_FINAL, SATURATION = "er", "kl_uniform", "cka_final", "saturation_event"


def metrics_read() -> tuple[str, ...]:
    """The metrics the comparison reads from each table: its numbers' and its curves'."""
    return tuple(dict.fromkeys((VAL_LOSS, EXCESS, HEAD_ER, HEAD_KL, CKA_FINAL, SATURATION,
                                *(m.name for m in catalogue.compared()))))


def curve_title(m: catalogue.Measurement) -> str:
    """A compare figure's title: the measurement's label, of the head or averaged over the layers where it says."""
    return {"head": f"head {m.label}", "layers": f"{m.label} (mean over the layers' weight matrices)"}.get(m.compare, m.label)


def curve_series(table: pd.DataFrame, m: catalogue.Measurement) -> pd.DataFrame:
    """One run's curve of a compared measurement: step and value, sorted by step."""
    if m.compare == "head":
        return head_series(table, m.name)
    if m.compare == "layers":
        rows = table[(table["metric"] == m.name) & (table["layer"] >= 0)]
        return rows.groupby("step", as_index=False)["value"].mean()
    return _series(table, m.name)
RISE_MARGIN = 0.02  # nats: final validation loss this far above its best counts as a late rise


class CompareError(ValueError):
    """Input the comparison cannot use: one line for people."""


@dataclass
class Run:
    name: str
    path: Path
    info: dict
    config: dict
    table: pd.DataFrame


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories: each path that holds ``metrics.parquet``, or the run directories directly inside it."""
    found = []
    for p in map(Path, paths):
        if store.table_path(p).is_dir():
            found.append(p)
        elif p.is_dir() and (subs := sorted(d for d in p.iterdir() if store.table_path(d).is_dir())):
            found += subs
        else:
            raise CompareError(f"{p} is neither a run directory (with metrics.parquet/) nor a directory of runs")
    if len(set(found)) != len(found):
        raise CompareError("a run is given twice; list each run (or sweep root) once")
    return found


def _read_table(path: Path) -> pd.DataFrame:
    """The rows the report needs from one run's table (``store.read_table`` of those metrics only)."""
    return store.read_table(store.table_path(path), metrics=metrics_read())


def _load(path: Path) -> Run:
    info_file, config_file = path / "run.json", path / "config.yaml"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    config = yaml.load(config_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if config_file.is_file() else {}
    return Run(info.get("run", path.name), path, info, config or {}, _read_table(path))


def load_runs(paths: list[Path], threads: int = 8) -> list[Run]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_load, paths))


def lookup(run: Run, key: str):
    """A dotted key from the run's resolved config, else from run.json (None when neither has it)."""
    return grouping.lookup(run.config, run.info, key)


def _series(table: pd.DataFrame, metric: str, component: str | None = "model") -> pd.DataFrame:
    rows = table[table["metric"] == metric]
    if component is not None:
        rows = rows[rows["component"] == component]
    return rows.sort_values("step")


def final_and_best(table: pd.DataFrame, metric: str = VAL_LOSS) -> tuple[float, float, int] | None:
    """(final value, best value, step of the best) of a model-level curve (component ``model``), by step; None
    without rows. The one reading of "final" and "best" for ``compare``, ``sweep``'s summary and ``lmdynamics runs``."""
    rows = _series(table, metric)
    if rows.empty:
        return None
    best = rows.loc[rows["value"].idxmin()]
    return float(rows["value"].iloc[-1]), float(best["value"]), int(best["step"])


def summarize(run: Run) -> dict:
    """The final numbers of one run."""
    t = run.table
    excess = _series(t, EXCESS)
    er, kl = head_series(t, HEAD_ER), head_series(t, HEAD_KL)
    seed = lookup(run, "seed_everything")
    row = {"run": run.name, "model": run.info.get("model", ""), "seed": seed if seed is not None else run.info.get("seed"),
           "hidden_size": run.info.get("hidden_size"), "parameters": run.info.get("parameters"),
           "steps": int(t["step"].max()) if len(t) else 0}
    curve = final_and_best(t)
    if curve is not None:
        final, best, best_step = curve
        row.update(final_val_loss=final, best_val_loss=best, best_step=best_step, late_rise=bool(final > best + RISE_MARGIN))
    floor = (run.info.get("synthetic") or {}).get("entropy_floor")
    row["entropy_floor"] = floor
    if len(excess):
        row.update(final_excess_loss=float(excess["value"].iloc[-1]), best_excess_loss=float(excess["value"].min()))
    if len(er):
        row["final_head_er"] = float(er["value"].iloc[-1])
    if len(kl):
        row["final_head_kl_uniform"] = float(kl["value"].iloc[-1])
    row["saturation_events"] = int((t["metric"] == SATURATION).sum())
    return row


def _layer_cka(table: pd.DataFrame) -> pd.DataFrame:
    """CKA-to-final rows of the layers' whole components (the per-head ``ov_head*`` rows left out)."""
    rows = table[(table["metric"] == CKA_FINAL) & (table["layer"] >= 0)]
    return rows[~rows["component"].str.startswith("ov_head")]


def convergence_fractions(runs: list[Run], threshold: float) -> pd.DataFrame:
    """Per run and layer, the fraction of training after which CKA-to-final stays >= threshold (mean over components)."""
    from lmdynamics.summaries import convergence_steps

    out = []
    for run in runs:
        rows = _layer_cka(run.table)
        if rows.empty:
            continue
        steps = convergence_steps(rows, threshold=threshold, total_steps=run.info.get("max_steps"))
        for layer, g in steps.groupby("layer"):
            out.append({"run": run.name, "layer": int(layer), "fraction": float(g["fraction"].mean())})
    return pd.DataFrame(out, columns=["run", "layer", "fraction"])


def cka_curves(runs: list[Run]) -> pd.DataFrame:
    """Per run, layer and measured step: CKA-to-final (mean over the layer's components) and the step's fraction of
    training (step / max_steps, else over the run's last measured step)."""
    out = []
    for run in runs:
        rows = _layer_cka(run.table)
        if rows.empty:
            continue
        total = run.info.get("max_steps") or int(rows["step"].max())
        mean = rows.groupby(["layer", "step"], as_index=False)["value"].mean()
        out.append(mean.assign(run=run.name, fraction=mean["step"] / total))
    cols = ["run", "layer", "step", "fraction", "value"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)
