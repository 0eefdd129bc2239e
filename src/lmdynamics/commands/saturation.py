"""``lmdynamics saturation``: did a model saturate, when, and did its output head move first? (Godey et al. 2024;
docs/science.md section 3; ``lmdynamics saturation``, ``make saturation``; the study: ``lmdynamics.saturation``)

    lmdynamics saturation --evals DIR --task lambada_openai --metric ppl --out OUT
    lmdynamics saturation --table runs/demo --metric val_loss --out OUT

``--evals``: lm-eval result JSONs searched recursively (model = first folder level, step from the file name
or model_args), e.g. a clone of the Pythia repository's ``evals/pythia-v1``. ``--table``: a run's or an
analysis's tidy table. Writes OUT/saturation.csv, OUT/report.md and OUT/figures/ (one side-by-side figure
per model with the head's KL-to-uniform, ER and last-layer anisotropy where the table has them).
"""

from __future__ import annotations

import sys

from ..arguments import UsageError, canonical_flags, command_parser, given, traceback_requested
from ..arguments import parse as parse_arguments


def build_parser():
    from ..saturation.detect import MARGIN, MIN_FRACTION

    p = command_parser("lmdynamics saturation", "Did a model saturate, when, and did its output head move first?",
                       "YAML file whose keys are these options (e.g. configs/analysis/saturation-pythia.yaml)")
    p.add_argument("--evals", type=str, help="directory of lm-eval result JSONs (searched recursively)")
    p.add_argument("--table", type=str, help="a run or analysis directory holding metrics.parquet/, or that directory")
    p.add_argument("--task", type=str, help="harness task (required with --evals; with --table the metric is <task>/<metric>)")
    p.add_argument("--metric", type=str, help="metric name: ppl, acc, perplexity, ... or val_loss with --table")
    p.add_argument("--measures", type=str, help="a tidy table with the same models' head_rank rows (kl_uniform, er, "
                   "anisotropy), e.g. the output of lmdynamics analyze, for the side-by-side figures of --evals")
    p.add_argument("--out", type=str, help="output directory")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--higher_is_better", dest="higher", action="store_const", const=True, default=None,
                     help="override the metric's direction (default: the result files' own map, else from its name)")
    way.add_argument("--lower_is_better", dest="higher", action="store_const", const=False,
                     help="the metric is better when lower (the opposite of --higher_is_better)")
    p.add_argument("--min_fraction", type=float, default=MIN_FRACTION,
                   help=f"best checkpoint searched from this fraction of training on (default {MIN_FRACTION})")
    p.add_argument("--margin", type=float, default=MARGIN,
                   help=f"relative gap above which the final checkpoint counts as saturated (default {MARGIN})")
    p.add_argument("--tokens_per_step", type=int, default=None,
                   help="tokens per step of the evaluated models, for the table's tokens column (--evals)")
    p.add_argument("--scaling_large", type=str | list[str], default="", help="models to fit A, alpha of "
                   "L(N,T) = A/N^alpha + B/T^beta + E on, comma-separated (turns on the scaling-law gap)")
    p.add_argument("--params", type=str, default="", help="parameter counts, model=N,... (Pythia names are known)")
    p.add_argument("--scaling_fixed", type=str, default="", help="override the fixed B, beta, E, e.g. B=410.7,beta=0.28,E=1.69")
    return p


def parse(argv: list[str] | None):
    """The options of a command line (over its ``--config`` files); :class:`UsageError` (one line) for bad input."""
    argv = canonical_flags(list(sys.argv[1:] if argv is None else argv))
    args = parse_arguments(build_parser(), argv, "saturation config")
    if args.evals is not None and args.table is not None:  # a source on the command line wins over the config's
        named = [name for name in ("evals", "table") if given(argv, name)]
        if len(named) != 1:
            raise UsageError("give one of --evals DIR or --table PATH, not both")
        args.evals, args.table = (args.evals, None) if named == ["evals"] else (None, args.table)
    if (args.evals is None) == (args.table is None):
        raise UsageError("give one of --evals DIR or --table PATH (on the command line or in --config)")
    for name in ("metric", "out"):
        if not getattr(args, name):
            raise UsageError(f"--{name} is required")
    if isinstance(args.scaling_large, list):
        args.scaling_large = ",".join(args.scaling_large)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        from ..saturation import analyze

        if args.evals is not None:
            if not args.task:
                raise UsageError("--evals needs --task (e.g. --task lambada_openai)")
            series = analyze.from_evals(args.evals, args.task, args.metric, args.tokens_per_step)
        else:
            series = analyze.from_table(args.table, args.metric, args.task)
        if args.measures:
            series = analyze.with_measures(series, args.measures)
        fixed = analyze.parse_pairs(args.scaling_fixed, "--scaling_fixed")
        if set(fixed) - {"B", "beta", "E"}:
            raise UsageError(f"--scaling_fixed takes B, beta and E, not {sorted(set(fixed) - {'B', 'beta', 'E'})}")
        large = [m.strip() for m in (args.scaling_large or "").split(",") if m.strip()]
        from lmdynamics.report.saturation_report import write

        report = write(args.out, series, args.higher, args.min_fraction, args.margin,
                       large=large, params=analyze.parse_pairs(args.params, "--params"), fixed=fixed)
    except (UsageError, ValueError) as err:  # analyze.InputError is a ValueError
        if traceback_requested():
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"saturation report written to {report}")
    return 0
