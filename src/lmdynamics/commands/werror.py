"""``lmdynamics werror``: W-error of a corpus, how much of its empirical next-token matrix a rank-d head can
represent (Godey et al. 2024; docs/science.md section 3; definitions in ``lmdynamics.saturation.werror``;
``lmdynamics werror``).

    lmdynamics werror --out OUT                                   # 5-grams of the bundled corpus
    lmdynamics werror --source docs/ --tokenizer path/tokenizer.json --n 5 --min_count 2 \\
        --hidden_sizes pythia-70m=512,pythia-160m=768 --out OUT

Writes OUT/werror.csv (d, w_error), the same as tidy-table rows in OUT/metrics.parquet (metric w_error,
index = d) and OUT/figures/werror.png with each model's hidden size marked.
"""

from __future__ import annotations

from ..arguments import command_parser, run_command


def build_parser():
    p = command_parser("lmdynamics werror", "W-error curve of a tokenised corpus's n-gram next-token matrix.")
    p.add_argument("--source", type=str, default="python-docs", help="corpus, as data.source of training (default python-docs)")
    p.add_argument("--tokenizer", type=str, default="bpe:4096", help="as data.tokenizer of training (default bpe:4096)")
    p.add_argument("--max_documents", type=int, default=None, help="read at most this many documents of the corpus (default all)")
    p.add_argument("--cache_dir", type=str, default=None, help="corpus/tokenizer cache (default ~/.cache/lmdynamics)")
    p.add_argument("--n", type=int, default=5, help="n-gram order: contexts of n-1 tokens (default 5)")
    p.add_argument("--min_count", type=int, default=1, help="keep contexts seen at least this often (default 1)")
    p.add_argument("--method", type=str, default="auto", choices=["auto", "gram", "arpack"],
                   help="singular values from the Gram matrix, from ARPACK, or auto: Gram up to GRAM_MAX ids of "
                        "vocabulary, ARPACK beyond (default auto)")
    p.add_argument("--hidden_sizes", type=str, default="", help="models to mark, name=d,... (e.g. demo=128)")
    p.add_argument("--out", type=str, required=True, help="output directory")
    return p


def _werror(args, argv) -> int:
    from ..report.figures.bottleneck import draw_werror
    from ..saturation import werror
    from ..saturation.analyze import parse_pairs

    sizes = parse_pairs(args.hidden_sizes, "--hidden_sizes", int)
    tokens, vocab, description = werror.corpus_tokens(args.source, args.tokenizer, args.max_documents, args.cache_dir)
    path = werror.write(args.out, tokens, vocab, args.n, args.min_count, args.method, sizes, description, args.source)
    draw_werror(path, sizes)
    print(f"W-error curve written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _werror, errors=(ValueError,))
