"""``lmdynamics trajectories {record,report,score,run}``: the trajectory study from the command line
(``lmdynamics trajectories``, ``make trajectories``; the study: ``lmdynamics.trajectories``).

record: every checkpoint of run directories / hub repos on one evaluation text -> ``OUT/<model>/`` stores.
report: class shares, double descent, group perplexity across sizes, the overlap measure, figures -> OUT.
score:  perplexity of generated texts (``lmdynamics contrastive``) under every checkpoint of every recorded
        model, against validation perplexity -> OUT.
run:    the study of one training run (``make trajectories``): its live trajectories, or its validation blocks
        recorded from its checkpoints into ``RUN/trajectories/``, then the report (corpus counts from its own
        training split, the start fractions that hold >= 3 checkpoints) -> ``RUN/trajectories-report/``.
Each subcommand takes ``--config FILE.yaml`` of its options. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import UsageError, command_parser, run_command, subcommand_parser

__all__ = ["main", "build_parser"]


def build_parser():
    ap = command_parser("lmdynamics trajectories", __doc__.splitlines()[0].replace("``", ""))
    sub = ap.add_subcommands(dest="command", required=True)
    rec = subcommand_parser(ap, sub, "record", "record per-token losses at every checkpoint")
    rec.add_argument("--source", type=str, action="append", required=True,
                     help="run directory or hub repo id (repeat per model)")
    rec.add_argument("--text", type=str, help="evaluation text (.txt: documents separated by blank lines, .jsonl, .parquet)")
    rec.add_argument("--tokens_from", type=str, help="a store directory (e.g. one recorded live) whose token blocks to "
                     "record again (instead of --text)")
    rec.add_argument("--blocks", type=int, default=50, help="evaluation blocks (the paper: 50 documents)")
    rec.add_argument("--block_tokens", type=int, default=2048, help="tokens per block (the paper: 2048)")
    rec.add_argument("--val_text", type=str, help="validation text for each checkpoint's validation perplexity (default: the evaluation text)")
    rec.add_argument("--val_blocks", type=int, default=0, help="validation blocks (default: as many as --blocks)")
    rec.add_argument("--tokenizer", type=str, help="tokenizer.json (default: the first source's, at its last step)")
    rec.add_argument("--steps", type=str, default="all", help="a preset (all, paper, pythia-all, every-10k) or a comma list")
    rec.add_argument("--hub_cache", type=str, help="Hugging Face cache directory for hub sources (default: the hub's own)")
    rec.add_argument("--batch_size", type=int, default=8, help="evaluation blocks per forward pass (default 8)")
    rec.add_argument("--device", type=str, default="cpu", help="torch device of the models (default cpu)")
    rec.add_argument("--out", type=str, required=True, help="directory of the stores (one sub-directory per model)")
    rep = subcommand_parser(ap, sub, "report", "classify, compare across sizes, draw")
    rep.add_argument("--store", type=str, action="append", required=True,
                     help="directory written by `record`, or a run's trajectories/ directory (repeat to combine)")
    rep.add_argument("--out", type=str, required=True, help="report directory")
    rep.add_argument("--reference", type=str, help="model whose trend classes define the traced groups (default: the smallest)")
    rep.add_argument("--start_fraction", type=float, default=0.2, help="window start of the reference's classes (the paper: 20%%)")
    rep.add_argument("--start_fractions", type=str, default="0.1,0.2,0.3,0.4,0.5,0.6,0.7", help="window starts of the class shares")
    rep.add_argument("--regressor", type=str, default=None, help="step or log_step (default: log_step, metrics.trends)")
    rep.add_argument("--variance_condition", action="store_true", help="add the authors' var < m stagnation condition (mismatched units)")
    rep.add_argument("--counts", type=str, help="token counts for frequency buckets: .npy (one count per id) or .json {id: count}")
    rep.add_argument("--corpus", type=str, help="where to count token frequencies: python-docs (the bundled corpus's training split), "
                     "a run directory (its training split, as it trained), or a text file (default: the evaluation tokens)")
    rep.add_argument("--tokenizer", type=str, help="tokenizer.json for the token classes (default: the reference source's)")
    sc = subcommand_parser(ap, sub, "score", "perplexity of generated texts under every recorded checkpoint")
    sc.add_argument("--generations", type=str, required=True, help="generations.jsonl written by lmdynamics contrastive")
    sc.add_argument("--store", type=str, action="append", required=True, help="as for report (repeat to combine)")
    sc.add_argument("--out", type=str, required=True, help="output directory")
    sc.add_argument("--device", type=str, default="cpu", help="torch device of the scoring models (default cpu)")
    sc.add_argument("--hub_cache", type=str, help="Hugging Face cache directory for hub sources (default: the hub's own)")
    study = subcommand_parser(ap, sub, "run", "record (unless recorded live) and report the trajectories of one training run")
    study.add_argument("run_dir", type=str, help="a training run directory, e.g. runs/demo")
    study.add_argument("--blocks", type=int, default=None, help="validation blocks to record when the run has no live "
                       "trajectories (default 16 as trajectories.num_blocks, or all the run has if fewer)")
    study.add_argument("--out", type=str, help="report directory (default RUN/trajectories-report)")
    study.add_argument("--regressor", type=str, default=None, help="step or log_step (default: log_step)")
    study.add_argument("--variance_condition", action="store_true", help="as for report")
    study.add_argument("--batch_size", type=int, default=8, help="evaluation blocks per forward pass (default 8)")
    study.add_argument("--device", type=str, default="cpu", help="torch device of the models (default cpu)")
    return ap


def _regressor(name: str | None) -> str:
    from ..metrics.trends import DEFAULT_TRAJECTORY_REGRESSOR, REGRESSORS

    if name is None:
        return DEFAULT_TRAJECTORY_REGRESSOR
    if name not in REGRESSORS:
        raise UsageError(f"--regressor {name!r}: choose from {', '.join(REGRESSORS)}")
    return name


def _tokenizer_file(spec: str, cache_dir=None, steps="all") -> Path:
    """The tokenizer.json of the last selected checkpoint of a source."""
    from ..checkpoints import open_source, parse_steps

    source = open_source(spec, cache_dir=cache_dir)
    steps = source.steps(parse_steps(steps))
    path = source.tokenizer_file(steps[-1])
    if path is None:
        raise FileNotFoundError(f"{spec} has no tokenizer.json at step {steps[-1]}; give --tokenizer")
    return Path(path)


def _record(args) -> int:
    if (args.text is None) == (args.tokens_from is None):
        raise UsageError("record: give one of --text FILE or --tokens_from STORE")
    from ..trajectories.offline import evaluation_text, record_sources, stored_text

    if args.tokens_from:
        text = stored_text(args.tokens_from)
    else:
        tok = args.tokenizer or _tokenizer_file(args.source[0], args.hub_cache, args.steps)
        text = evaluation_text(tok, args.text, args.blocks, args.block_tokens, args.val_text, args.val_blocks)
    stores = record_sources(args.source, text, args.out, args.steps, args.batch_size, args.device,
                            log=lambda m: print(m, file=sys.stderr), cache_dir=args.hub_cache)
    for s in stores:
        print(f"{s.dir}: {len(s.steps)} checkpoints x {s.num_tokens} tokens")
    return 0


def _counts(args, tokenizer, tokenizer_file, vocab: int, ids):
    from ..trajectories.counts import corpus_counts, counts_file
    from ..trajectories.tokens import token_counts

    if args.counts:
        return counts_file(args.counts, vocab)
    if args.corpus:
        run_tok = None
        if Path(args.corpus).is_dir() and (Path(args.corpus) / "checkpoints").is_dir():
            run_tok = _tokenizer_file(args.corpus)
        return corpus_counts(args.corpus, tokenizer, tokenizer_file, vocab, run_tok)
    return token_counts([ids], vocab)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--start_fractions {text!r}: give comma-separated fractions such as 0.1,0.2") from None
    if not out or not all(0 <= f < 1 for f in out):
        raise UsageError(f"--start_fractions {text!r}: every fraction must be in [0, 1)")
    return out


def _report(args) -> int:
    from ..probes.sources import load_tokenizer
    from ..report.trajectories_report import build_report, write_report
    from ..trajectories.storage import open_stores
    from ..trajectories.tokens import frequency_buckets, token_classes

    regressor = _regressor(args.regressor)
    fractions = _fractions(args.start_fractions)
    stores = [s for root in args.store for s in open_stores(root)]
    trajs = [s.read() for s in stores]
    by_size = sorted(trajs, key=lambda t: t.meta.get("parameters", 0))
    reference = args.reference or by_size[0].model
    ref = next((t for t in trajs if t.model == reference), None)
    if ref is None:
        raise ValueError(f"--reference {reference!r} is not among the recorded models {[t.model for t in trajs]}")
    tok_file = args.tokenizer or _tokenizer_file(ref.meta["source"])
    tok = load_tokenizer(tok_file)
    ids = ref.token_table.ids
    vocab = max(len(tok), int(ids.max()) + 1)
    previous = next(s for s, t in zip(stores, trajs) if t is ref).previous_ids()
    breakdowns = {"token_class": token_classes(tok, ids, previous), "frequency": frequency_buckets(_counts(args, tok, tok_file, vocab, ids), ids)}
    report = build_report(trajs, reference, args.start_fraction, regressor, breakdowns,
                          start_fractions=fractions, variance_condition=args.variance_condition)
    path = write_report(report, args.out)
    print(f"report: {path}")
    if len(trajs) > 1:
        print(report.overlap.to_string(index=False))
    else:  # the overlap measure compares sizes: nothing to print for one model
        print("overlap across sizes: needs two or more models (give several --store or --source)")
    return 0


def _score(args) -> int:
    from ..trajectories.scoring import score_generations

    import pandas as pd

    from lmdynamics.report.figures.trajectories import plot_generated_ppl

    path = score_generations(args.generations, args.store, args.out, args.device, args.hub_cache)
    plot_generated_ppl(pd.read_csv(path), path.parent / "generated_ppl_vs_val_ppl.png")
    print(f"scores: {path}")
    return 0


def _usable_fractions(steps, fractions=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(fractions whose window holds >= 3 checkpoints, the others); default: the study's start fractions."""
    from ..metrics.trends import window_start
    from ..trajectories.classify import START_FRACTIONS

    fractions = START_FRACTIONS if fractions is None else fractions
    ok = tuple(f for f in fractions if len(steps) - window_start(steps, f) >= 3)
    return ok, tuple(f for f in fractions if f not in ok)


def _study(args) -> int:
    from ..checkpoints import open_source
    from ..layout import RunLayout
    from ..trajectories.offline import record_source, run_validation_text, stored_text
    from ..trajectories.storage import MANIFEST_FILE, TrajectoryStore, model_dir_name

    regressor = _regressor(args.regressor)
    layout = RunLayout(args.run_dir)
    if not layout.checkpoints.is_dir():
        raise FileNotFoundError(f"{layout.root} has no checkpoints (it does not exist yet?): run make train first, "
                                f"or give a trained run directory")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    live = [layout.trajectories / model_dir_name(n) for n in (layout.name, open_source(str(layout.root)).run)]
    live = next((d for d in live if (d / MANIFEST_FILE).is_file()), None)
    if live is not None:
        log(f"[trajectories] {layout.root}: completing the trajectories in {live} from the checkpoints")
        text = stored_text(live)
        # validation perplexity as the live recorder measures it: over every validation block, not the stored ones
        text.val_blocks = run_validation_text(layout.root, len(text.blocks), _tokenizer_file(str(layout.root))).val_blocks
    else:
        text = run_validation_text(layout.root, args.blocks, _tokenizer_file(str(layout.root)))
        log(f"[trajectories] {layout.root}: recording {len(text.blocks)} validation blocks at every checkpoint")
    store = record_source(str(layout.root), text, layout.trajectories, "all", args.batch_size, args.device, log=log)
    fractions, left_out = _usable_fractions(TrajectoryStore(store.dir).read().steps)
    if not fractions:
        raise ValueError(f"{layout.root} has {len(store.steps)} checkpoints: too few for any trend window (each needs >= 3)")
    if left_out:
        log(f"[trajectories] start fractions {', '.join(map(str, left_out))} left out: fewer than 3 checkpoints from there on")
    report = argparse.Namespace(store=[str(layout.trajectories)], out=args.out or str(layout.root / "trajectories-report"),
                                reference=None, start_fraction=0.2 if 0.2 in fractions else fractions[0],
                                start_fractions=",".join(map(str, fractions)), regressor=regressor,
                                variance_condition=args.variance_condition, counts=None, corpus=str(layout.root),
                                tokenizer=None)
    return _report(report)


def _run(args, argv) -> int:
    run = {"record": _record, "report": _report, "score": _score, "run": _study}[args.command]
    return run(getattr(args, args.command))


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _run, errors=(ValueError,))  # CheckpointError is a ValueError
