"""Load time of a trajectory store: 1e5 tokens x 154 checkpoints (the Pythia schedule) as a float32 matrix.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_trajectories.py [--tokens N] [--checkpoints C]
Prints the append time per checkpoint, the size on disk and the best-of-3 read time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lmdynamics.trajectories.storage import TokenTable, TrajectoryStore


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--checkpoints", type=int, default=154)
    args = ap.parse_args(argv)
    n, c = args.tokens, args.checkpoints
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        table = TokenTable(rng.integers(0, 50277, n), np.arange(n) % 2048, np.arange(n) // 2048, np.arange(n) // 2048)
        store = TrajectoryStore.create(Path(tmp) / "m", table, {"model": "bench"})
        row = rng.uniform(0, 12, n).astype(np.float32)
        t0 = time.perf_counter()
        for s in range(c):
            store.append(s * 1000, row, 10.0, s)
        append = (time.perf_counter() - t0) / c
        size = (Path(tmp) / "m" / "losses.f16").stat().st_size
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            traj = TrajectoryStore(Path(tmp) / "m").read()
            times.append(time.perf_counter() - t0)
        assert traj.losses.shape == (n, c)
    print(f"trajectory store {n} tokens x {c} checkpoints: {size / 1e6:.1f} MB on disk ({size / (n * c):.1f} bytes/value), "
          f"append {append * 1e3:.1f} ms/checkpoint, read as float32 (tokens x checkpoints) {min(times):.3f} s "
          f"(best of 3; target < 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
