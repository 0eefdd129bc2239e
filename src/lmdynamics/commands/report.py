"""``lmdynamics report``: every figure a tidy table supports and ``<out>/report.md`` (reads only the table,
never model files; ``lmdynamics report``).

    lmdynamics report --table runs/demo                     # a run directory (holds metrics.parquet/)
    lmdynamics report --table analysis_out/metrics.parquet --out analysis_out/report
"""

from __future__ import annotations

from pathlib import Path

from ..arguments import command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics report", __doc__.split("\n\n")[0])
    parser.add_argument("--table", type=str, required=True,
                        help="a run or analysis directory holding metrics.parquet/, or that directory itself")
    parser.add_argument("--out", type=str, help="output directory (default: <directory holding the table>/report)")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA convergence threshold")
    parser.add_argument("--at_fraction", type=float, default=0.2,
                        help="fraction of training for the headline CKA and the box plots")
    return parser


def _report(args, argv) -> int:
    from ..report.run_report import write_report
    from ..store import load_table, resolve_table

    table = resolve_table(args.table)
    frame = load_table(table)
    out = Path(args.out) if args.out else table.parent / "report"
    report = write_report(frame, out, threshold=args.threshold, at_fraction=args.at_fraction)
    print(f"report written to {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _report, errors=(ValueError,))
