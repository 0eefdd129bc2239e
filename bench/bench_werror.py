"""Benchmark of the W-error of the default corpus's 5-gram matrix (a script, not a test).

Builds the sparse next-token matrix of every 4-token context of the bundled corpus's training tokens
(``lmdynamics.saturation.werror``), then its W-error curve two ways: ``gram`` (every singular value from the
vocab x vocab Gram matrix) and ``arpack`` (Lanczos on the implicit Gram operator, top ``--k`` values). Prints wall
time and the peak resident memory each phase added over the process before it (Linux VmHWM, reset per
phase), beside the memory a dense SVD of the contexts x vocab matrix would need (not run).
Target: the whole curve in under a minute on a 2-core CPU.

Usage: python bench/bench_werror.py [--quick] [--n 5] [--min-count 1] [--k 256]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmdynamics.data.datamodule import TextDataModule  # noqa: E402
from lmdynamics.saturation.werror import default_dims, ngram_matrix, w_error_curve  # noqa: E402


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def phase(fn):
    """(seconds, peak RSS added in bytes, result) of fn()."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak-RSS counter
    except OSError:
        pass
    base = _status("VmRSS:")
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, max(_status("VmHWM:") - base, 0), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="min_count 2 and k 64")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--k", type=int, default=256, help="singular values the arpack path computes")
    args = p.parse_args()
    min_count, k = (2, 64) if args.quick else (args.min_count, args.k)
    dm = TextDataModule()
    dm.prepare()
    tokens = dm.train_blocks.reshape(-1).numpy()
    secs, mem, (w, _) = phase(lambda: ngram_matrix(tokens, args.n, min_count, dm.vocab_size))
    sparse_mb = (w.data.nbytes + w.indices.nbytes + w.indptr.nbytes) / 1e6
    print(f"corpus {dm.corpus_description}: {len(tokens):,} training tokens, vocab {dm.vocab_size}")
    print(f"{args.n}-gram matrix (min_count {min_count}): {w.shape[0]:,} contexts x {w.shape[1]:,}, nnz {w.nnz:,}, "
          f"{sparse_mb:.1f} MB sparse; built in {secs:.2f} s, peak +{mem / 1e6:.0f} MB")
    print(f"a dense SVD of it would hold {w.shape[0] * w.shape[1] * 8 / 1e9:.1f} GB (float64) before starting: not run")
    secs, mem, curve = phase(lambda: w_error_curve(w, default_dims(w), "gram"))
    print(f"gram (all {min(w.shape)} values): {secs:.1f} s, peak +{mem / 1e6:.0f} MB")
    secs2, mem2, top = phase(lambda: w_error_curve(w, [d for d in default_dims(w) if d <= k], "arpack"))
    print(f"arpack (top {k}):        {secs2:.1f} s, peak +{mem2 / 1e6:.0f} MB")
    worst = max(abs(top[d] - curve[d]) for d in top)
    print("W-error(d): " + ", ".join(f"{d}: {v:.3f}" for d, v in curve.items()))
    print(f"max |arpack - gram| over d <= {k}: {worst:.1e}")


if __name__ == "__main__":
    main()
