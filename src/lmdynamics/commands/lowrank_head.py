"""``lmdynamics lowrank-head``: freeze a checkpoint's backbone, train a head W = A B of rank r for r on a log
grid, and compare the loss with the full-rank head (Godey et al. 2024; ``lmdynamics.saturation.lowrank_head``;
``lmdynamics lowrank-head``).

    lmdynamics lowrank-head --checkpoint runs/demo/checkpoints/step00000600 --out OUT

Writes OUT/lowrank_head.csv (r, loss, and the references), the same as tidy-table rows in OUT/metrics.parquet
(metric lowrank_head_loss, index = r; full_head_loss, full_head_trained_loss) and OUT/figures/lowrank_head.png.
"""

from __future__ import annotations

from ..arguments import command_parser, run_command


def build_parser():
    p = command_parser("lmdynamics lowrank-head", "Loss of a rank-constrained head on a frozen checkpoint, over a rank grid.")
    p.add_argument("--checkpoint", type=str, required=True, help="a Hugging Face checkpoint directory (weights + tokenizer.json)")
    p.add_argument("--source", type=str, default="python-docs", help="corpus, as data.source of training (default python-docs)")
    p.add_argument("--ranks", type=str, default="", help="comma-separated ranks (default: log grid from --r_min to d)")
    p.add_argument("--r_min", type=int, default=None, help="smallest rank (default 32, or d/16 for d < 512)")
    p.add_argument("--train_blocks", type=int, default=1024, help="training blocks the head sees (default 1024)")
    p.add_argument("--eval_blocks", type=int, default=64, help="held-out blocks for the loss (default 64)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per head (default 300)")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="AdamW learning rate (default 1e-4: on the demo checkpoint 3e-4 and 1e-3 overfit 130k tokens)")
    p.add_argument("--batch", type=int, default=1024, help="tokens per step (default 1024)")
    p.add_argument("--init", type=str, default="svd", choices=["svd", "normal"],
                   help="initial factors: svd, the best rank-r approximation of the trained head, or normal, random "
                        "with logits near 0 (default svd)")
    p.add_argument("--cache_dir", type=str, default=None, help="corpus/tokenizer cache (default ~/.cache/lmdynamics)")
    p.add_argument("--out", type=str, required=True, help="output directory")
    return p


def _lowrank_head(args, argv) -> int:
    from ..report.figures.bottleneck import draw_lowrank_head
    from ..saturation import lowrank_head

    ranks = [int(r) for r in str(args.ranks).split(",") if r.strip()]
    path, result = lowrank_head.run(args.checkpoint, args.out, args.source, ranks or None, args.r_min,
                                    args.train_blocks, args.eval_blocks, cache_dir=args.cache_dir,
                                    steps=args.steps, lr=args.lr, batch=args.batch, init=args.init)
    draw_lowrank_head(path, result)
    losses = ", ".join(f"r={r}: {v:.4f}" for r, v in result["ranks"].items())
    print(f"{losses}; full head {result['full']:.4f}; written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _lowrank_head, errors=(ValueError, OSError))
