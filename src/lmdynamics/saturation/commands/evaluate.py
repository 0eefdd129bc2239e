"""Evaluate every checkpoint of a run (or hub revisions) with lm-evaluation-harness, or cheaply with the
held-out loss of a local corpus (lmdynamics.saturation.evaluate). Resumable: evaluated checkpoints are skipped.

    python analysis/evaluate.py --run runs/demo --tasks lambada_openai --out evals/
    python analysis/evaluate.py --run runs/demo --tasks demo_lastword --include-path my_tasks/ --out evals/
    python analysis/evaluate.py --hub EleutherAI/pythia-70m --steps 1000,143000 --tasks lambada_openai --out evals/
    python analysis/evaluate.py --run runs/demo --corpus-loss docs.txt --out evals/       # no harness

Writes <out>/<model>/stepNNNNNNNN.json (harness result files) and <out>/metrics.parquet; then
``python analysis/saturation.py --evals <out> --task TASK --metric METRIC --measures runs/demo --out OUT``.
"""

from __future__ import annotations

import argparse
import sys

from lmdynamics.saturation import evaluate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run directory (checkpoints/stepNNNNNNNN)")
    src.add_argument("--hub", help="a hub repository with step revisions (e.g. EleutherAI/pythia-70m)")
    p.add_argument("--steps", default="", help="comma-separated steps (default: every checkpoint of --run)")
    p.add_argument("--tasks", default="", help="comma-separated lm-eval tasks")
    p.add_argument("--include-path", help="directory of local task YAMLs")
    p.add_argument("--batch-size", default="8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=float, default=None, help="documents per task (lm-eval's --limit)")
    p.add_argument("--corpus-loss", metavar="SOURCE",
                   help="instead of the harness: held-out loss of this corpus (as data.source) at every checkpoint")
    p.add_argument("--blocks", type=int, default=64, help="held-out blocks for --corpus-loss (default 64)")
    p.add_argument("--tokens-per-step", type=int, default=0, help="for --hub (a run's run.json says it)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
        if args.run:
            run, model, tokens_per_step, targets = evaluate.run_targets(args.run, steps or None)
        else:
            if not steps:
                raise ValueError("--hub needs --steps")
            run, model, tokens_per_step = args.hub, args.hub, args.tokens_per_step
            targets = evaluate.hub_targets(args.hub, steps)
        if args.corpus_loss:
            blocks = _corpus_blocks(args.corpus_loss, targets[0], args.blocks)
            evaluate.evaluate_corpus_loss(targets, model, args.out, blocks, tokens_per_step, run)
        else:
            tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
            if not tasks:
                raise ValueError("--tasks is empty: name lm-eval tasks, or use --corpus-loss SOURCE")
            batch = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
            evaluate.evaluate_harness(targets, model, args.out, tasks, args.include_path, batch, args.device,
                                      args.limit, tokens_per_step, run)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _corpus_blocks(source: str, target: evaluate.Target, n: int):
    """Held-out blocks of ``source`` tokenised with the first checkpoint's tokenizer, at its context length."""
    from transformers import AutoConfig

    from lmdynamics.data.datamodule import TextDataModule

    pretrained = target.model_args["pretrained"]
    config = AutoConfig.from_pretrained(pretrained, revision=target.model_args.get("revision"))
    tokenizer = f"{pretrained}/tokenizer.json" if not target.model_args.get("revision") else pretrained
    dm = TextDataModule(source=source, tokenizer=tokenizer, val_blocks=n,
                        context_length=min(int(config.max_position_embeddings), 2048))
    dm.prepare()
    return dm.val_blocks_tensor


if __name__ == "__main__":
    sys.exit(main())
