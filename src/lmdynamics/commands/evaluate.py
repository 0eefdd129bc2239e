"""``lmdynamics evaluate``: every checkpoint of a run (or hub revisions) with lm-evaluation-harness, or cheaply
with the held-out loss of a local corpus (``lmdynamics.saturation.evaluate``; ``lmdynamics evaluate``).
Resumable: evaluated checkpoints are skipped.

    lmdynamics evaluate --run runs/demo --tasks lambada_openai --out evals/
    lmdynamics evaluate --run runs/demo --tasks demo_lastword --include_path my_tasks/ --out evals/
    lmdynamics evaluate --hub EleutherAI/pythia-70m --steps 1000,143000 --tasks lambada_openai --out evals/
    lmdynamics evaluate --run runs/demo --corpus_loss docs.txt --out evals/       # no harness

Writes <out>/<model>/stepNNNNNNNN.json (harness result files) and <out>/metrics.parquet; then
``lmdynamics saturation --evals <out> --task TASK --metric METRIC --measures runs/demo --out OUT``.
"""

from __future__ import annotations

from ..arguments import UsageError, command_parser, run_command


def build_parser():
    p = command_parser("lmdynamics evaluate", "Evaluate every checkpoint of a run (or hub revisions) with "
                       "lm-evaluation-harness, or with the held-out loss of a local corpus.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", type=str, help="a run directory (checkpoints/stepNNNNNNNN)")
    src.add_argument("--hub", type=str, help="a hub repository with step revisions (e.g. EleutherAI/pythia-70m)")
    p.add_argument("--steps", type=str, default="", help="comma-separated steps (default: every checkpoint of --run)")
    p.add_argument("--tasks", type=str, default="", help="comma-separated lm-eval tasks")
    p.add_argument("--include_path", type=str, help="directory of local task YAMLs")
    p.add_argument("--batch_size", type=str, default="8", help="lm-eval's --batch_size (a number or auto; default 8)")
    p.add_argument("--device", type=str, default="cpu", help="torch device of the model (default cpu)")
    p.add_argument("--limit", type=float, default=None, help="documents per task (lm-eval's --limit)")
    p.add_argument("--corpus_loss", type=str, metavar="SOURCE",
                   help="instead of the harness: held-out loss of this corpus (as data.source) at every checkpoint")
    p.add_argument("--blocks", type=int, default=64, help="held-out blocks for --corpus_loss (default 64)")
    p.add_argument("--tokens_per_step", type=int, default=0, help="for --hub (a run's run.json says it)")
    p.add_argument("--out", type=str, required=True, help="output directory")
    return p


def _evaluate(args, argv) -> int:
    from ..saturation import evaluate

    if (args.run is None) == (args.hub is None):
        raise UsageError("give one of --run RUN_DIR or --hub REPO")
    steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
    if args.run:
        run, model, tokens_per_step, targets = evaluate.run_targets(args.run, steps or None)
    else:
        if not steps:
            raise UsageError("--hub needs --steps")
        run, model, tokens_per_step = args.hub, args.hub, args.tokens_per_step
        targets = evaluate.hub_targets(args.hub, steps)
    if args.corpus_loss:
        blocks = evaluate.corpus_blocks(args.corpus_loss, targets[0], args.blocks)
        evaluate.evaluate_corpus_loss(targets, model, args.out, blocks, tokens_per_step, run)
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not tasks:
            raise UsageError("--tasks is empty: name lm-eval tasks, or use --corpus_loss SOURCE")
        batch = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
        evaluate.evaluate_harness(targets, model, args.out, tasks, args.include_path, batch, args.device,
                                  args.limit, tokens_per_step, run)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _evaluate, errors=(ValueError, OSError))
