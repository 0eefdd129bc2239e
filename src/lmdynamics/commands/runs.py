"""``lmdynamics runs [ROOT]``: the training runs under ROOT (default ``runs``), one line each (or one JSON object
each); ``lmdynamics.runs`` reads them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..arguments import BAD_INPUT, command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics runs", "the training runs under ROOT (default runs), one line each")
    parser.add_argument("root", type=str, nargs="?", default="runs", help="a directory of runs (default: runs) or one run")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    return parser


def _runs(args, argv) -> int:
    from ..runs import find_runs, format_table, summarize

    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root} is not a directory of runs; train one first (`make train` writes runs/demo) or give "
              "the run root (lmdynamics runs PATH)", file=sys.stderr)
        return BAD_INPUT
    rows = [summarize(run) for run in find_runs(root)]
    if not rows:
        print(f"no runs under {root} (a run directory holds run.json)")
        return 0
    if args.json:
        for row in rows:
            print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(row).items()}))
    else:
        print(format_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _runs)
