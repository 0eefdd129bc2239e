"""Numbers for docs/results/convergence-ladder.md: is each size still learning late?

Per sweep root and hidden size: the validation loss at 50%, 80% and 100% of training and its drop over the last
20% (mean and sample standard deviation over the seeds), read from the runs' tidy tables.

    .venv/bin/python docs/results/convergence_ladder_loss.py runs/convergence-ladder runs/convergence-ladder-cosine
"""

import json
import sys
from pathlib import Path

# this folder holds docs/results/bottleneck/ (figures), which would shadow pandas' optional `bottleneck` module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import pandas as pd  # noqa: E402

from lmdynamics import store  # noqa: E402


def late_losses(root: Path) -> pd.DataFrame:
    rows = []
    for run in sorted(p for p in root.iterdir() if store.table_path(p).is_dir()):
        info = json.loads((run / "run.json").read_text())
        total = info["max_steps"]
        t = store.read_table(store.table_path(run), metrics=["val_loss"])
        val = t[t["component"] == "model"].set_index("step")["value"]
        at = {f: float(val[round(f * total)]) for f in (0.5, 0.8, 1.0)}
        rows.append({"d": info["hidden_size"], "val@50%": at[0.5], "val@80%": at[0.8], "val@100%": at[1.0],
                     "drop last 20%": at[0.8] - at[1.0], "best": float(val.min()), "final - best": at[1.0] - float(val.min())})
    return pd.DataFrame(rows).groupby("d").agg(["mean", "std"])


if __name__ == "__main__":
    for root in sys.argv[1:]:
        print(f"## {root} (validation loss, nats; mean and std over seeds)")
        print(late_losses(Path(root)).round(3).to_string())
