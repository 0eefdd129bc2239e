"""Reading many runs' tables for the comparison report: 50 runs of a demo-sized table, timed.

Each fake run holds what a 600-step demo run writes with every measurement on: per-step values (train_loss,
lr, grad_norm, tokens, tokens_per_sec, model_tflops, measure_share), validation every 50 steps, and 14
measurement steps of weight ranks (4 layers x 9 matrices x 4 metrics), head spectrum (128 singular values),
CKA rows; spread over 13 parts as an uncompacted run leaves them. Printed: rows per run, the time to read
the 50 tables (``lmdynamics.compare.runs.load_runs``, only the rows the report uses) against reading every row
with ``store.read_table`` one run after another, and the time of the whole report (tables, grouping by hidden
size and head kind, the verdict against the plain head, figures). The runs form a sweep's grid: 5 sizes x 2
head kinds (plain, mos) x 5 seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from lmdynamics import store
from lmdynamics.compare.runs import find_runs, load_runs
from lmdynamics.report.compare_report import write_report


def fake_run(root: Path, name: str, d: int, rng: np.random.Generator, steps: int = 600, kind: str = "plain",
             seed: int = 1) -> int:
    run = root / name
    rows = []

    def add(step, metric, value, layer=-1, component="model", index=-1):
        rows.append((name, f"neox-L4-d{d}-h4", step, step * 2048, layer, component, metric, index, float(value)))

    for s in range(1, steps + 1):
        for m in ("train_loss", "lr", "grad_norm", "tokens", "tokens_per_sec", "model_tflops", "measure_share"):
            add(s, m, rng.random())
        if s % 50 == 0:
            for m in ("val_loss", "val_ppl", "excess_loss"):
                add(s, m, 3 + rng.random())
    for s in (0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600):
        for layer in range(4):
            for comp in ("qkv", "dense", "mlp_in", "mlp_out", "ov_head00", "ov_head01", "ov_head02", "ov_head03", "ov"):
                for m in ("er", "per", "stable_rank", "condition_number"):
                    add(s, m, rng.random(), layer, comp)
            for comp in ("attn", "mlp", "resid", "ov"):
                for m in ("cka_prev", "cka_final"):
                    add(s, m, rng.random(), layer, comp)
        for m in ("er", "per", "stable_rank", "condition_number", "kl_uniform"):
            add(s, m, rng.random(), -1, "head")
        for i in range(128):
            add(s, "sv_norm", rng.random(), -1, "head", index=i)
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(store.COLUMNS))
    for part in np.array_split(np.arange(len(frame)), 13):
        store.append(store.table_path(run), frame.iloc[part])
    (run / "run.json").write_text(json.dumps({"run": name, "model": f"neox-L4-d{d}-h4", "max_steps": steps,
                                              "tokens_per_step": 2048, "hidden_size": d}))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"model": {"hidden_size": d, "head": {"kind": kind, "components": 4}}},
                                                     "seed_everything": seed}))
    return len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="accepted for bench/run.py; the benchmark is already quick")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweep"
        # 5 sizes x 2 head kinds x seeds: the grid of an intervention sweep
        n = [fake_run(root, f"r{i:02d}", (16, 32, 64, 128, 256)[i % 5], rng, kind=("plain", "mos")[(i // 5) % 2],
                      seed=i // 10) for i in range(args.runs)]
        paths = find_runs([str(root)])
        t0 = time.perf_counter()
        for p in paths:
            store.read_table(store.table_path(p))
        t_all = time.perf_counter() - t0
        t0 = time.perf_counter()
        runs = load_runs(paths)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(load_runs(paths), Path(tmp) / "cmp", ["hidden_size", "head.kind"], baseline="head.kind=plain")
        t_report = time.perf_counter() - t0
        figures = len(list((Path(tmp) / "cmp" / "figures").glob("*.png")))
    print(f"{args.runs} runs, {n[0]:,} rows each ({sum(n):,} in all, 13 parts per run)")
    print(f"read every row, run after run (store.read_table): {t_all:6.2f} s")
    print(f"compare.load_runs (report rows only, 8 threads):   {t_ours:6.2f} s  ({sum(len(r.table) for r in runs):,} rows kept)")
    print(f"whole report (read + groups + verdict + {figures} figures): {t_report:6.2f} s")


if __name__ == "__main__":
    main()
