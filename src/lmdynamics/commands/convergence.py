"""``lmdynamics convergence RUN``: CKA-to-final of a training run from its stored probe activations, and the
per-layer convergence summary, into the run's tidy table (``lmdynamics convergence``)."""

from __future__ import annotations

from ..arguments import command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics convergence", __doc__.split("\n\n")[0])
    parser.add_argument("run", type=str, help="a training run directory (holding run.json and activations/)")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA-to-final level for the convergence summary")
    parser.add_argument("--debiased", action="store_true", help="also write the unbiased-HSIC CKA")
    return parser


def _convergence(args, argv) -> int:
    from ..cka_to_final import finalize_run

    summary = finalize_run(args.run, threshold=args.threshold, debiased=args.debiased)
    print(f"CKA-to-final written for {summary['steps']} steps (final step {summary['final_step']}) to {args.run}/metrics.parquet")
    print(summary["line"])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _convergence, errors=(ValueError,))
