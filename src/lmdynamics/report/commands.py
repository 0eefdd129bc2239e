"""The small analysis commands: ``lmdynamics report`` (figures and report of any tidy table) and
``lmdynamics convergence`` (CKA-to-final of a training run). Parsed by jsonargparse, as every command."""

from __future__ import annotations

import sys
from pathlib import Path


def _parser(prog: str, description: str):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with the flags below")
    return parser


def _parse(parser, argv):
    from lmdynamics.arguments import error_line

    from lmdynamics.config_files import check_config_files

    argv = list(sys.argv[1:] if argv is None else argv)
    problem = check_config_files(argv)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    try:
        return parser.parse_args(argv)
    except Exception as err:  # jsonargparse's ArgumentError: one line
        known = [a.dest for a in parser._actions if a.dest not in ("help", "config")]
        print(f"error: {error_line(err, argv, known)}", file=sys.stderr)
        return None


def report_main(argv: list[str] | None = None) -> int:
    """Draw every figure a tidy table supports and write ``<out>/report.md`` (reads only the table)."""
    from lmdynamics.report.run_report import write_report
    from lmdynamics.store import load_table, resolve_table

    parser = _parser("lmdynamics report", report_main.__doc__)
    parser.add_argument("--table", type=str, required=True,
                        help="a run or analysis directory holding metrics.parquet/, or that directory itself")
    parser.add_argument("--out", type=str, help="output directory (default: <directory holding the table>/report)")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA convergence threshold")
    parser.add_argument("--at_fraction", "--at-fraction", type=float, default=0.2,
                        help="fraction of training for the headline CKA and the box plots")
    args = _parse(parser, argv)
    if args is None:
        return 2
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


def convergence_main(argv: list[str] | None = None) -> int:
    """CKA-to-final of a training run from its stored probe activations, and the per-layer summary."""
    from lmdynamics.cka_to_final import finalize_run

    parser = _parser("lmdynamics convergence", convergence_main.__doc__)
    parser.add_argument("run", type=str, help="a training run directory (holding run.json and activations/)")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA-to-final level for the convergence summary")
    parser.add_argument("--debiased", type=bool, default=False, help="also write the unbiased-HSIC CKA")
    args = _parse(parser, [a if a != "--debiased" else "--debiased=true" for a in (sys.argv[1:] if argv is None else argv)])
    if args is None:
        return 2
    try:
        summary = finalize_run(args.run, threshold=args.threshold, debiased=args.debiased)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"CKA-to-final written for {summary['steps']} steps (final step {summary['final_step']}) to {args.run}/metrics.parquet")
    print(summary["line"])
    return 0
