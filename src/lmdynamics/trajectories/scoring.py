"""Perplexity of generated texts under every recorded checkpoint of every model (Xia et al. 2023, sec. 5).

Each generation is scored given its prompt: only the generated tokens count, and the perplexity of a model
at a checkpoint is token-weighted over all generations, exp(sum of losses / number of generated tokens).
The checkpoints are those of the trajectory stores (their sources in the stores' meta), so every point has
the validation perplexity the study plots it against. Writes ``scores.csv``; its figure is ``lmdynamics.report.figures.trajectories.plot_generated_ppl``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import torch

from ..atomic import write_text_atomic
from ..checkpoints import open_source
from .offline import check_same_tokenizer, load_model
from .record import token_losses
from .storage import open_stores

__all__ = ["generated_text_losses", "score_generations"]


def generated_text_losses(model, generations: list[dict]) -> torch.Tensor:
    """Losses of the generated tokens of every generation (concatenated), each given its prompt."""
    out = []
    for g in generations:
        seq = torch.tensor([list(g["prompt_ids"]) + list(g["ids"])])
        out.append(token_losses(model, seq, 1)[0, len(g["prompt_ids"]) - 1:])
    return torch.cat(out)


def _read(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with lmdynamics contrastive")
    gens = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not gens or not all(g.get("ids") for g in gens):
        raise ValueError(f"{path} holds no generated tokens")
    return gens


def score_generations(generations: str | os.PathLike, store_roots, out: str | os.PathLike,
                      device: str = "cpu", cache_dir: str | os.PathLike | None = None) -> Path:
    gens = _read(generations)
    roots = [store_roots] if isinstance(store_roots, (str, os.PathLike)) else list(store_roots)
    stores = [s for root in roots for s in open_stores(root)]
    plan = []
    for s in stores:
        source = open_source(s.manifest["meta"]["source"], cache_dir=cache_dir)
        steps = sorted(s.steps)
        check_same_tokenizer(source.tokenizer_file(steps[-1]), s.manifest["meta"]["tokenizer"], f"{source.run}@step{steps[-1]}")
        plan.append((s, source, steps))
    rows = []
    for s, source, steps in plan:
        val = {c["step"]: c["val_ppl"] for c in s.manifest["checkpoints"]}
        for step in steps:
            ckpt = source.checkpoint(step)
            losses = generated_text_losses(load_model(ckpt, device), gens).double()
            rows.append({"model": s.manifest["meta"]["model"], "step": step, "tokens": ckpt.tokens, "val_ppl": val[step],
                         "generated_ppl": math.exp(float(losses.mean())), "generated_tokens": int(losses.numel())})
    frame = pd.DataFrame(rows)
    out = Path(out)
    write_text_atomic(out / "scores.csv", frame.to_csv(index=False))
    return out / "scores.csv"
