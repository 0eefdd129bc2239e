"""Contrastive text from two checkpoints sharing a tokenizer, as ``lmdynamics contrastive`` runs it
(``lmdynamics.commands.contrastive`` parses; the decoding: ``lmdynamics.trajectories.contrastive``).

CKPT: a Hugging Face checkpoint directory (``runs/x/checkpoints/step00000600``) or ``SOURCE@STEP`` with SOURCE a
run directory or a hub repo id (``EleutherAI/pythia-70m@143000``), resolved by ``lmdynamics.checkpoints``.
Writes ``OUT/generations.jsonl`` (one line per prompt; a generation stops at the tokenizer's end-of-text token,
``finished: eos``, or after --max_new_tokens, ``finished: length``) and ``OUT/generation.json`` (the settings).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import write_json_atomic, write_text_atomic
from ..checkpoints import CheckpointError, open_source
from ..probes.sources import eos_token_id, load_tokenizer, tokenizer_fingerprint
from .contrastive import FLOOR, check_weights, contrastive_generate

__all__ = ["generate", "resolve_checkpoint"]


def resolve_checkpoint(spec: str) -> Path:
    """A checkpoint directory from a path or ``SOURCE@STEP``."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a Hugging Face checkpoint directory (no config.json); give one or SOURCE@STEP")
        return path
    source, sep, step = spec.rpartition("@")
    if not sep:
        raise CheckpointError(f"{spec!r} is neither a checkpoint directory nor SOURCE@STEP (e.g. runs/demo@600)")
    try:
        n = int(step.removeprefix("step"))
    except ValueError:
        raise CheckpointError(f"{spec!r}: {step!r} is not a step number") from None
    return open_source(source).checkpoint(n).path


def _weights(text: str) -> tuple[float, float]:
    try:
        w = [float(x) for x in text.split(",")]
    except ValueError:
        w = []
    if len(w) != 2:
        raise ValueError(f"--weights {text!r}: give two numbers w_small,w_large in [-1, 1], e.g. 1,-1")
    check_weights(*w)
    return w[0], w[1]


def generate(args) -> Path:
    from .offline import load_model

    w_s, w_l = _weights(args.weights)
    floor = FLOOR if getattr(args, "floor", None) is None else args.floor
    if args.max_new_tokens <= 0:
        raise ValueError(f"--max_new_tokens must be positive, got {args.max_new_tokens}")
    prompts = [line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()] \
        if Path(args.prompts).is_file() else None
    if not prompts:
        raise ValueError(f"--prompts {args.prompts}: no such file or no prompt in it; give a file with one prompt per line")
    dirs = {"small": resolve_checkpoint(args.small), "large": resolve_checkpoint(args.large)}
    toks = {}
    for k, d in dirs.items():
        if not (d / "tokenizer.json").is_file():
            raise CheckpointError(f"--{k} {d} has no tokenizer.json; contrastive decoding needs both tokenizers to compare them")
        toks[k] = load_tokenizer(d / "tokenizer.json")
    if tokenizer_fingerprint(toks["small"]) != tokenizer_fingerprint(toks["large"]):
        raise ValueError("the small and large checkpoints have different tokenizers; contrast models of one family (same tokenizer)")
    tok = toks["small"]

    class _C:  # the loader takes a checkpoint with a .path
        def __init__(self, path):
            self.path = path

    small, large = (load_model(_C(dirs[k]), args.device) for k in ("small", "large"))
    limit = min(small.config.max_position_embeddings, large.config.max_position_embeddings)
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for p, ids in zip(prompts, encoded):
        if len(ids) + args.max_new_tokens > limit:
            raise ValueError(f"prompt {p[:30]!r} ({len(ids)} tokens) + {args.max_new_tokens} new tokens exceed the models' context of {limit}; shorten it or lower --max_new_tokens")
        if not ids:
            raise ValueError(f"prompt {p!r} has no tokens")
    gen = torch.Generator().manual_seed(args.seed)
    eos = eos_token_id(tok)
    lines = []
    for p, ids in zip(prompts, encoded):
        res = contrastive_generate(small, large, ids, w_s, w_l, args.max_new_tokens, args.greedy, args.top_p, gen,
                                   floor, eos_id=eos)
        lines.append(json.dumps({"prompt": p, "prompt_ids": ids, "ids": res["ids"],
                                 "text": tok.decode(res["ids"], skip_special_tokens=True), "finished": res["finished"],
                                 "p_small": res["p_small"], "p_large": res["p_large"]}))
    out = Path(args.out)
    settings = {"small": str(dirs["small"]), "large": str(dirs["large"]), "weights": [w_s, w_l],
                "mode": "greedy" if args.greedy else f"top_p={args.top_p}", "floor": floor, "seed": args.seed,
                "max_new_tokens": args.max_new_tokens, "eos_id": eos}
    write_text_atomic(out / "generations.jsonl", "\n".join(lines) + "\n")
    write_json_atomic(out / "generation.json", settings)
    return out / "generations.jsonl"
