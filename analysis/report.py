"""Draw every figure a tidy table supports and write a Markdown report.

    python analysis/report.py --table runs/demo            # a run directory (holds metrics.parquet/)
    python analysis/report.py --table analysis_out/metrics.parquet --out analysis_out/report

Writes <out>/report.md and <out>/figures/*.png. Reads only the tidy table, never model files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmdynamics.analysis.report import load_table, resolve_table, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True,
                        help="a run or analysis directory holding metrics.parquet/, or that directory itself")
    parser.add_argument("--out", help="output directory (default: <directory holding the table>/report)")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA convergence threshold (default 0.95)")
    parser.add_argument("--at-fraction", type=float, default=0.2,
                        help="fraction of training for the headline CKA and the box plots (default 0.2)")
    args = parser.parse_args(argv)
    try:
        table = resolve_table(args.table)
        frame = load_table(table)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else table.parent / "report"
    report = write_report(frame, out, threshold=args.threshold, at_fraction=args.at_fraction)
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
