"""``lmdynamics compare RUN... --out DIR``: one report across runs from their tidy tables
(``lmdynamics.compare`` reads and groups, ``lmdynamics.report.compare_report`` draws)."""

from __future__ import annotations

from pathlib import Path

from ..arguments import UsageError, command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics compare", "One report across runs from their tidy tables, run.json and config.yaml.")
    parser.add_argument("runs", type=str, nargs="+",
                        help="run directories, or directories holding run directories (a sweep root)")
    parser.add_argument("--out", type=str, required=True,
                        help="output directory for report.md, runs.csv, verdict.csv and figures/")
    parser.add_argument("--group_by", type=str, default=None,
                        help="comma-separated config keys or run.json fields (a unique tail such as head.kind will do); "
                             "default: the config keys that differ between the runs, seeds excepted")
    parser.add_argument("--baseline", type=str, default=None,
                        help="KEY=VALUE of the baseline group (e.g. head.kind=plain): the verdict table")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA-to-final convergence threshold")
    return parser


def _compare(args, argv) -> int:
    from ..compare.runs import CompareError, find_runs, load_runs
    from ..report.compare_report import write_report

    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else None
    try:
        runs = load_runs(find_runs(args.runs))
        report = write_report(runs, Path(args.out), group_by, args.threshold, args.baseline)
    except CompareError as err:
        raise UsageError(str(err)) from None
    print(f"[compare] {len(runs)} runs: {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _compare)
