"""CKA-to-final for any training run from its stored probe activations: ``python analysis/convergence.py runs/demo``."""

import argparse
import sys

from lmdynamics.analysis.convergence import finalize_run

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", help="a training run directory (holding run.json and activations/)")
    ap.add_argument("--threshold", type=float, default=0.95, help="CKA-to-final level for the convergence summary")
    ap.add_argument("--debiased", action="store_true", help="also write the unbiased-HSIC CKA")
    args = ap.parse_args()
    try:
        summary = finalize_run(args.run, threshold=args.threshold, debiased=args.debiased)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"CKA-to-final written for {summary['steps']} steps (final step {summary['final_step']}) to {args.run}/metrics.parquet")
    print(summary["line"])
