"""Benchmark of the metrics library against the obvious baselines (a script, not a test).

1. Singular values of V x d matrices (V = 50304, the Pythia head), d in {128, 512, 1024}:
   ``lmdynamics.metrics.singular_values`` (float64 Gram eigenvalues, SVD fallback) against
   ``torch.linalg.svdvals`` on the float32 matrix and on its float64 copy. Inputs are float32, the
   reference is float64 svdvals. Errors: "abs/smax" = max |s - ref| / ref_max, "rel" = max per-value
   |s - ref| / ref over values >= 1e-9 ref_max (the promise of spectrum.py is <= 1e-6 for both).
   Matrices: i.i.d. Gaussian; "decay", a head-like spectrum decaying 100x (Gaussian G times
   diag(logspace(0, -2)) times a random rotation); "ill", decaying 1e5x (goes to the SVD fallback).
2. Anisotropy of n = 8192 rows of d = 512: the O(n d) form against the n x n cosine matrix.

Usage: python bench/bench_metrics.py [--quick] [--device cpu|cuda] [--repeats N] [--dims D ...]
"""

from __future__ import annotations

import argparse
import math
import os
import time

# On a machine whose cores are shared with other jobs, libgomp's default spin-waiting makes LAPACK's many
# small parallel regions (eigvalsh, svdvals) up to 100x slower (measured: 128 x 128 eigvalsh 2.4 s instead
# of 1 ms). Passive waiting removes that for every method alike; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmdynamics.metrics import anisotropy, singular_values  # noqa: E402
from lmdynamics.metrics.spectrum import _gram_values  # noqa: E402


def timed(fn, repeats: int, device: str):
    """Best wall time of `repeats` runs (the machine may be shared) and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def errors(s: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    s, ref = s.double().cpu(), ref.double().cpu()
    smax = ref[0]
    big = ref >= 1e-9 * smax
    return float((s - ref).abs().max() / smax), float(((s - ref).abs()[big] / ref[big]).max())


def make(kind: str, m: int, n: int, device: str, seed: int) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(m, n, generator=g, device=device)
    if kind == "random":
        return w
    span = {"decay": 2, "ill": 5}[kind]
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, device=device, dtype=torch.float64))
    scale = torch.logspace(0, -span, n, device=device, dtype=torch.float64)
    return ((w.double() * scale) @ q.T).float()


def bench_singular_values(sizes, kinds, device: str, repeats: int) -> None:
    print(
        f"\n== singular values, float32 input, device={device}, threads={torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} =="
    )
    head = (
        f"{'matrix':<22}{'kind':<8}{'ours s':>9}{'path':>6}{'svd32 s':>9}{'x':>7}{'svd64 s':>9}{'x':>7}"
        f"{'ours abs/smax':>15}{'ours rel':>10}{'svd32 abs/smax':>16}{'svd32 rel':>11}"
    )
    print(head)
    print("-" * len(head))
    for m, n in sizes:
        for kind in kinds:
            w = make(kind, m, n, device, seed=n)
            t64, ref = timed(lambda: torch.linalg.svdvals(w.double()), max(1, repeats - 1), device)
            t32, s32 = timed(lambda: torch.linalg.svdvals(w), repeats, device)
            tours, ours = timed(lambda: singular_values(w), repeats, device)
            _, kept = _gram_values(w)
            ea, er = errors(ours, ref)
            ea32, er32 = errors(s32, ref)
            path = "gram" if bool(kept) else "svd"
            print(
                f"{f'{m} x {n}':<22}{kind:<8}{tours:>9.3f}{path:>6}{t32:>9.3f}{t32 / tours:>6.1f}x{t64:>9.3f}{t64 / tours:>6.1f}x"
                f"{ea:>15.1e}{er:>10.1e}{ea32:>16.1e}{er32:>11.1e}",
                flush=True,
            )


def anisotropy_nxn(h: torch.Tensor) -> float:
    """The n x n form: every pairwise cosine, then the off-diagonal mean."""
    u = F.normalize(h, dim=1)
    c = u @ u.T
    n = h.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * n - n))


def bench_anisotropy(n: int, d: int, device: str, repeats: int) -> None:
    print(f"\n== anisotropy, n={n}, d={d}, float32 input, device={device} ==")
    g = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(n, d, generator=g, device=device) + 0.3 * torch.randn(d, generator=g, device=device)
    ref = anisotropy_nxn(h.double())
    t_ours, ours = timed(lambda: anisotropy(h), repeats, device)
    t_nxn, nxn = timed(lambda: anisotropy_nxn(h), repeats, device)
    mem_nxn = n * n * 4 / 2**20
    print(f"{'method':<28}{'time s':>9}{'x':>7}{'value':>12}{'rel err vs f64 n x n':>22}{'extra memory':>14}")
    print(f"{'ours O(n d), float64':<28}{t_ours:>9.4f}{1.0:>6.1f}x{ours:>12.6f}{abs(ours - ref) / abs(ref):>22.1e}{n * d * 8 / 2**20:>11.0f} MB")
    print(f"{'n x n cosines, float32':<28}{t_nxn:>9.4f}{t_nxn / t_ours:>6.1f}x{nxn:>12.6f}{abs(nxn - ref) / abs(ref):>22.1e}{mem_nxn:>11.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run in seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="best of N timings (default 3, 1 with --quick)")
    parser.add_argument("--dims", type=int, nargs="+", default=None,
                        help="head widths d of the 50304 x d matrices (default 128 512 1024; the GPU check: 512 1024 2048)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    if args.quick:
        sizes, kinds, an = [(8192, 64), (8192, 128)], ["random", "decay", "ill"], (1024, 128)
    else:
        sizes, kinds, an = [(50304, d) for d in args.dims or (128, 512, 1024)], ["random", "decay", "ill"], (8192, 512)
    bench_singular_values(sizes, kinds, args.device, repeats)
    bench_anisotropy(*an, args.device, repeats)


if __name__ == "__main__":
    main()
