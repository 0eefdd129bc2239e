"""Did a model saturate, when, and did its output head move first? (Godey et al. 2024; docs/science.md section 3)

    python analysis/saturation.py --evals DIR --task lambada_openai --metric ppl --out OUT
    python analysis/saturation.py --table runs/demo --metric val_loss --out OUT

``--evals``: lm-eval result JSONs searched recursively (model = first folder level, step from the file name
or model_args), e.g. a clone of the Pythia repository's ``evals/pythia-v1``. ``--table``: a run's or an
analysis's tidy table. Writes OUT/saturation.csv, OUT/report.md and OUT/figures/ (one side-by-side figure
per model with the head's KL-to-uniform, ER and last-layer anisotropy where the table has them).
"""

from __future__ import annotations

import argparse
import sys

from lmdynamics.saturation import analyze
from lmdynamics.saturation.detect import MARGIN, MIN_FRACTION


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML file whose keys are these options (e.g. configs/analysis/saturation-pythia.yaml); "
                   "options given on the command line win")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--evals", help="directory of lm-eval result JSONs (searched recursively)")
    src.add_argument("--table", help="a run or analysis directory holding metrics.parquet/, or that directory")
    p.add_argument("--task", help="harness task (required with --evals; with --table the metric is <task>/<metric>)")
    p.add_argument("--metric", help="metric name: ppl, acc, perplexity, ... or val_loss with --table")
    p.add_argument("--measures", help="a tidy table with the same models' head_rank rows (kl_uniform, er, anisotropy), "
                   "e.g. the output of analysis/run.py, for the side-by-side figures of --evals")
    p.add_argument("--out", help="output directory")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--higher-is-better", dest="higher", action="store_true", default=None,
                     help="override the metric's direction (default: the result files' own map, else from its name)")
    way.add_argument("--lower-is-better", dest="higher", action="store_false")
    p.add_argument("--min-fraction", type=float, default=MIN_FRACTION,
                   help=f"best checkpoint searched from this fraction of training on (default {MIN_FRACTION})")
    p.add_argument("--margin", type=float, default=MARGIN,
                   help=f"relative gap above which the final checkpoint counts as saturated (default {MARGIN})")
    p.add_argument("--tokens-per-step", type=int, default=None,
                   help="tokens per step of the evaluated models, for the table's tokens column (--evals)")
    p.add_argument("--scaling-large", help="comma-separated models to fit A, alpha of L(N,T) = A/N^alpha + B/T^beta + E "
                   "on (turns on the scaling-law gap: scaling.csv and its figure)")
    p.add_argument("--params", default="", help="parameter counts, model=N,... (Pythia names are known)")
    p.add_argument("--scaling-fixed", default="", help="override the fixed B, beta, E, e.g. B=410.7,beta=0.28,E=1.69")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options over the ``--config`` file's (keys as the options, dashes or underscores)."""
    p = parser()
    first, _ = p.parse_known_args(argv)
    if first.config:
        import yaml

        with open(first.config, encoding="utf-8") as fh:
            cfg = {k.replace("-", "_"): v for k, v in (yaml.safe_load(fh) or {}).items()}
        known = {a.dest for a in p._actions}
        if set(cfg) - known:
            raise analyze.InputError(f"{first.config}: unknown key(s) {sorted(set(cfg) - known)}")
        if "higher_is_better" in cfg:
            cfg["higher"] = cfg.pop("higher_is_better")
        p.set_defaults(**{k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in cfg.items()})
    args = p.parse_args(argv)
    if first.config and (first.evals is None) != (first.table is None):  # a source on the command line wins
        args.evals, args.table = first.evals, first.table
    if (args.evals is None) == (args.table is None):
        raise analyze.InputError("give one of --evals DIR or --table PATH (on the command line or in --config)")
    for name in ("metric", "out"):
        if not getattr(args, name):
            raise analyze.InputError(f"--{name} is required")
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
