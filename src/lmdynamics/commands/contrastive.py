"""``lmdynamics contrastive --small CKPT --large CKPT --weights 1,-1 [--top_p 0.9 | --greedy] --prompts FILE
--max_new_tokens N --out DIR``: contrastive text from two checkpoints sharing a tokenizer
(``lmdynamics.trajectories.contrastive_run``; ``lmdynamics contrastive``). Bad input: one line, exit 2, nothing
written."""

from __future__ import annotations

import json

from ..arguments import UsageError, command_parser, run_command


def build_parser():
    ap = command_parser("lmdynamics contrastive", "Contrastive text from a small and a large checkpoint sharing a tokenizer.")
    ap.add_argument("--small", type=str, required=True, help="checkpoint directory or SOURCE@STEP")
    ap.add_argument("--large", type=str, required=True, help="checkpoint directory or SOURCE@STEP")
    ap.add_argument("--weights", type=str, default="1,-1", help="w_small,w_large in [-1, 1] (default 1,-1: p_small - p_large)")
    ap.add_argument("--top_p", type=float, default=None, help="nucleus sampling threshold (default 0.9, as the paper)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding instead of nucleus sampling")
    ap.add_argument("--prompts", type=str, required=True, help="a text file, one prompt per line (blank lines skipped)")
    ap.add_argument("--max_new_tokens", type=int, default=100, help="tokens generated per prompt (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--floor", type=float, default=None, help="mass added to every token before renormalising (default 1e-7)")
    ap.add_argument("--device", type=str, default="cpu", help="torch device of both models (default cpu)")
    ap.add_argument("--out", type=str, required=True, help="output directory")
    return ap


def _contrastive(args, argv) -> int:
    if args.greedy and args.top_p is not None:
        raise UsageError("give one of --greedy or --top_p P, not both")
    if args.top_p is None:
        args.top_p = 0.9
    from ..trajectories.contrastive_run import generate

    path = generate(args)
    print(f"generations: {path}")
    for line in path.read_text().splitlines()[:3]:
        print(json.loads(line)["text"][:200].replace("\n", " "))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _contrastive, errors=(ValueError,))  # CheckpointError is a ValueError
