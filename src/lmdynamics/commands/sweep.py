"""``lmdynamics sweep --config SWEEP.yaml``: a grid of training runs, run by local workers or printed as one
command per run for a scheduler (``lmdynamics sweep``, ``make sweep``). ``--config`` is the sweep file itself
(its keys: ``lmdynamics.sweep``), read and checked by the sweep: an unknown key is one line, exit 2."""

from __future__ import annotations

from ..arguments import UsageError, command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics sweep", "A grid of training runs: local workers or printed commands.",
                            config_file=False)
    parser.add_argument("--config", type=str, required=True,
                        help="the sweep file (YAML: name, root, configs, set, workers, grid; configs/sweeps/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key in every run (repeatable), e.g. --set trainer.max_steps=400")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: the sweep file's, else 1)")
    parser.add_argument("--print_commands", action="store_true",
                        help="print one command per run for a scheduler (as it works in a new shell); run nothing")
    return parser


def _sweep(args, argv) -> int:
    from ..sweep import SweepError, load, parse_overrides, printed_commands, run_all, validate
    from .fit import main as fit_main

    try:
        sweep = load(args.config, parse_overrides(args.overrides))
        workers = args.workers if args.workers is not None else sweep.workers
        if workers < 1:
            raise SweepError(f"--workers must be at least 1, got {workers}")
        validate(sweep, fit_main)
    except SweepError as err:
        raise UsageError(str(err)) from None
    if args.print_commands:
        print("\n".join(printed_commands(sweep)))
        return 0
    return run_all(sweep, workers)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _sweep)
