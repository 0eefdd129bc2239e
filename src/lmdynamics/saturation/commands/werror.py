"""W-error of a corpus: how much of its empirical next-token matrix a rank-d head can represent
(Godey et al. 2024; docs/science.md section 3; definitions in lmdynamics.saturation.werror).

    python analysis/werror.py --out OUT                                   # 5-grams of the bundled corpus
    python analysis/werror.py --source docs/ --tokenizer path/tokenizer.json --n 5 --min-count 2 \
        --hidden-sizes pythia-70m=512,pythia-160m=768 --out OUT

Writes OUT/werror.csv (d, w_error), the same as tidy-table rows in OUT/metrics.parquet (metric w_error,
index = d) and OUT/figures/werror.png with each model's hidden size marked.
"""

from __future__ import annotations

import argparse
import sys

from lmdynamics.saturation import werror
from lmdynamics.saturation.analyze import parse_pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="python-docs", help="corpus, as data.source of training (default python-docs)")
    p.add_argument("--tokenizer", default="bpe:4096", help="as data.tokenizer of training (default bpe:4096)")
    p.add_argument("--max-documents", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="corpus/tokenizer cache (default ~/.cache/lmdynamics)")
    p.add_argument("--n", type=int, default=5, help="n-gram order: contexts of n-1 tokens (default 5)")
    p.add_argument("--min-count", type=int, default=1, help="keep contexts seen at least this often (default 1)")
    p.add_argument("--method", default="auto", choices=["auto", "gram", "arpack"])
    p.add_argument("--hidden-sizes", default="", help="models to mark, name=d,... (e.g. demo=128)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        sizes = parse_pairs(args.hidden_sizes, "--hidden-sizes", int)
        tokens, vocab, description = werror.corpus_tokens(args.source, args.tokenizer, args.max_documents, args.cache_dir)
        path = werror.write(args.out, tokens, vocab, args.n, args.min_count, args.method, sizes, description, args.source)
        from lmdynamics.report.figures.bottleneck import draw_werror

        draw_werror(path, sizes)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"W-error curve written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
