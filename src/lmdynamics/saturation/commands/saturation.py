"""Did a model saturate, when, and did its output head move first? (Godey et al. 2024; docs/science.md section 3)

    python analysis/saturation.py --evals DIR --task lambada_openai --metric ppl --out OUT
    python analysis/saturation.py --table runs/demo --metric val_loss --out OUT

``--evals``: lm-eval result JSONs searched recursively (model = first folder level, step from the file name
or model_args), e.g. a clone of the Pythia repository's ``evals/pythia-v1``. ``--table``: a run's or an
analysis's tidy table. Writes OUT/saturation.csv, OUT/report.md and OUT/figures/ (one side-by-side figure
per model with the head's KL-to-uniform, ER and last-layer anisotropy where the table has them).
"""

from __future__ import annotations

import sys

from lmdynamics.saturation import analyze
from lmdynamics.saturation.detect import MARGIN, MIN_FRACTION


def parser():
    """The options; ``--config FILE.yaml`` holds any of them (keys as the options, with underscores), read by
    jsonargparse as every lmdynamics command; options given on the command line win."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = ArgumentParser(prog="lmdynamics saturation", description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--config", action=ActionConfigFile,
                   help="YAML file whose keys are these options (e.g. configs/analysis/saturation-pythia.yaml)")
    p.add_argument("--evals", type=str, help="directory of lm-eval result JSONs (searched recursively)")
    p.add_argument("--table", type=str, help="a run or analysis directory holding metrics.parquet/, or that directory")
    p.add_argument("--task", type=str, help="harness task (required with --evals; with --table the metric is <task>/<metric>)")
    p.add_argument("--metric", type=str, help="metric name: ppl, acc, perplexity, ... or val_loss with --table")
    p.add_argument("--measures", type=str, help="a tidy table with the same models' head_rank rows (kl_uniform, er, "
                   "anisotropy), e.g. the output of analysis/run.py, for the side-by-side figures of --evals")
    p.add_argument("--out", type=str, help="output directory")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--higher-is-better", dest="higher", action="store_const", const=True, default=None,
                     help="override the metric's direction (default: the result files' own map, else from its name)")
    way.add_argument("--lower-is-better", dest="higher", action="store_const", const=False)
    p.add_argument("--min-fraction", type=float, default=MIN_FRACTION,
                   help=f"best checkpoint searched from this fraction of training on (default {MIN_FRACTION})")
    p.add_argument("--margin", type=float, default=MARGIN,
                   help=f"relative gap above which the final checkpoint counts as saturated (default {MARGIN})")
    p.add_argument("--tokens-per-step", type=int, default=None,
                   help="tokens per step of the evaluated models, for the table's tokens column (--evals)")
    p.add_argument("--scaling-large", type=str | list[str], default="", help="models to fit A, alpha of "
                   "L(N,T) = A/N^alpha + B/T^beta + E on, comma-separated (turns on the scaling-law gap)")
    p.add_argument("--params", type=str, default="", help="parameter counts, model=N,... (Pythia names are known)")
    p.add_argument("--scaling-fixed", type=str, default="", help="override the fixed B, beta, E, e.g. B=410.7,beta=0.28,E=1.69")
    return p


def parse(argv: list[str] | None):
    """The options of a command line (over its ``--config`` files); InputError (one line) for bad input."""
    import sys as _sys

    argv = list(_sys.argv[1:] if argv is None else argv)
    from lmdynamics.arguments import error_line
    from lmdynamics.config_files import check_config_files

    problem = check_config_files(argv)
    if problem:
        raise analyze.InputError(problem)
    p = parser()
    try:
        args = p.parse_args(argv)
    except Exception as err:  # jsonargparse's ArgumentError: one line
        known = [a.dest for a in p._actions if a.dest not in ("help", "config")]
        raise analyze.InputError(error_line(err, argv, known, "saturation config")) from None
    if args.evals is not None and args.table is not None:  # a source on the command line wins over the config's
        given = [name for name in ("evals", "table") if f"--{name}" in argv]
        if len(given) != 1:
            raise analyze.InputError("give one of --evals DIR or --table PATH, not both")
        args.evals, args.table = (args.evals, None) if given == ["evals"] else (None, args.table)
    if (args.evals is None) == (args.table is None):
        raise analyze.InputError("give one of --evals DIR or --table PATH (on the command line or in --config)")
    for name in ("metric", "out"):
        if not getattr(args, name):
            raise analyze.InputError(f"--{name} is required")
    if isinstance(args.scaling_large, list):
        args.scaling_large = ",".join(args.scaling_large)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        if args.evals is not None:
            if not args.task:
                raise analyze.InputError("--evals needs --task (e.g. --task lambada_openai)")
            series = analyze.from_evals(args.evals, args.task, args.metric, args.tokens_per_step)
        else:
            series = analyze.from_table(args.table, args.metric, args.task)
        if args.measures:
            series = analyze.with_measures(series, args.measures)
        fixed = analyze.parse_pairs(args.scaling_fixed, "--scaling-fixed")
        if set(fixed) - {"B", "beta", "E"}:
            raise analyze.InputError(f"--scaling-fixed takes B, beta and E, not {sorted(set(fixed) - {'B', 'beta', 'E'})}")
        large = [m.strip() for m in (args.scaling_large or "").split(",") if m.strip()]
        report = analyze.write(args.out, series, args.higher, args.min_fraction, args.margin,
                               large=large, params=analyze.parse_pairs(args.params, "--params"), fixed=fixed)
    except analyze.InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"saturation report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
