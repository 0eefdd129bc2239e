"""The live weight metrics of a run against an unsharded recomputation from its saved checkpoints.

For each ``checkpoints/stepNNNNNNNN`` of a run (first and last by default), the weight metrics are recomputed
from the saved Hugging Face weights alone (``iter_tensors``, no model, no sharding) and joined with the live
rows of the run's table at that step. Prints the number of joined values and the largest relative
difference per step. Meant for runs trained under DeepSpeed ZeRO-3, whose live measurements gather one
sharded parameter at a time (docs/results/gpu.md):

    python bench/live_against_offline.py runs/pythia-1.4b [--all] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmdynamics import store  # noqa: E402
from lmdynamics.checkpoints import iter_tensors  # noqa: E402
from lmdynamics.measure import weight_metric_rows  # noqa: E402


def compare_step(table: pd.DataFrame, checkpoint: Path, heads: int, device: str) -> tuple[int, float, str]:
    step = int(checkpoint.name[4:])
    offline = pd.DataFrame(weight_metric_rows(((n, t.to(device)) for n, t in iter_tensors(checkpoint)), heads,
                                              spectrum=True))
    offline["index"] = offline["index"].fillna(-1).astype(int)
    live = table[(table.step == step) & table.metric.isin(offline.metric.unique())
                 & ~table.metric.str.startswith("grad_")].copy()
    live["index"] = live["index"].fillna(-1).astype(int)
    merged = live.merge(offline, on=["layer", "component", "metric", "index"])
    finite = np.isfinite(merged.value_x) & np.isfinite(merged.value_y)
    rel = ((merged.value_x - merged.value_y).abs() / merged.value_y.abs().clip(lower=1e-300))[finite]
    if (np.isfinite(merged.value_x) != np.isfinite(merged.value_y)).any():
        return len(merged), float("inf"), "a value finite on one side only"
    if not len(rel) or rel.max() == 0:
        return len(merged), 0.0, ""
    worst = merged.loc[rel.idxmax()]
    return len(merged), float(rel.max()), f"at {worst.metric} layer {worst.layer} {worst.component}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run directory (runs/<name>)")
    ap.add_argument("--all", action="store_true", help="every checkpoint, not only the first and last")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    table = store.read_table(store.table_path(args.run))
    checkpoints = sorted(p for p in (args.run / "checkpoints").iterdir() if p.name.startswith("step"))
    if not checkpoints:
        sys.exit(f"live_against_offline.py: no checkpoints in {args.run / 'checkpoints'}")
    chosen = checkpoints if args.all else sorted({checkpoints[0], checkpoints[-1]})
    heads = json.loads((chosen[0] / "config.json").read_text())["num_attention_heads"]
    print(f"live weight metrics of {args.run} against a recomputation from the saved weights ({args.device})")
    for ckpt in chosen:
        n, rel, where = compare_step(table, ckpt, heads, args.device)
        print(f"  {ckpt.name}: {n} values joined, max relative difference {rel:.2e}  {where}")


if __name__ == "__main__":
    main()
