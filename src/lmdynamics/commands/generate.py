"""``lmdynamics generate``: sample continuations of a prompt from a checkpoint and print them
(``lmdynamics.generate`` has the sampling and the checkpoint resolution)."""

from __future__ import annotations

from ..arguments import command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics generate", __doc__.split("\n\n")[0].split(" (")[0])
    parser.add_argument("--checkpoint", type=str, required=True,
                        help="a checkpoint directory, a run directory (its last checkpoint) or SOURCE@STEP")
    parser.add_argument("--prompt", type=str, required=True, help="the text to continue")
    parser.add_argument("--max_new_tokens", type=int, default=40, help="tokens generated per sample (default 40)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (argmax at every step)")
    parser.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling threshold, (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--num_samples", type=int, default=1, help="continuations of the prompt (default 1)")
    return parser


def _generate(args, argv) -> int:
    import torch

    from ..generate import generate, resolve
    from ..models.heads import load_causal_lm
    from ..probes.sources import load_tokenizer

    directory = resolve(args.checkpoint)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{directory} has no tokenizer.json; generate needs the checkpoint's tokenizer")
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    model = load_causal_lm(directory, dtype=torch.float32).eval()
    samples = generate(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_p,
                       args.seed, args.num_samples)
    prompt_ids = tokenizer(args.prompt, add_special_tokens=False)["input_ids"]
    mode = "greedy" if args.temperature == 0 else f"temperature {args.temperature}, top-p {args.top_p}"
    for k, new in enumerate(samples, 1):
        print(f"--- sample {k} of {len(samples)} ({directory}, {mode}, seed {args.seed}, {len(new)} new tokens)")
        print(tokenizer.decode(prompt_ids + new))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _generate, errors=(ValueError,))  # CheckpointError is a ValueError
