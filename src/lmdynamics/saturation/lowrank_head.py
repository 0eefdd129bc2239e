"""Rank-constrained head (Godey et al. 2024, section 3 of docs/science.md): freeze a checkpoint's backbone,
replace its output head by W = A B (A: V x r, B: r x d), train only A and B, and read the loss against r.

The backbone is frozen, so its final hidden states (after the final LayerNorm, what the head reads) are
computed once per token and cached; training a head is then a linear model on cached features, which makes
the sweep cheap on CPU for our models and the same code serves a Pythia checkpoint (features in chunks).

Initialisation (``init``): ``svd`` (default) starts from the best rank-r approximation of the trained head
(A = U_r S_r^1/2, B = S_r^1/2 V_r^T, Eckart-Young), so r = d starts at the full head exactly; ``normal``
draws A and B from N(0, 1/sqrt(r)) x N(0, 1/sqrt(d)) entries scaled so that logits start near 0 (the paper
draws N(0, 1) and tunes the learning rate per r over 1e-3..5e-2; pass ``lr`` per run to do the same).
The reference line is the loss of the checkpoint's own (full-rank) head on the same evaluation tokens.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..clock import clock


@dataclass(frozen=True)
class Features:
    """Cached final hidden states ``h`` (N x d), next-token targets ``y`` (N) and the trained head (V x d)."""

    h: torch.Tensor
    y: torch.Tensor
    head: torch.Tensor


class Progress:
    """Progress lines for a long sweep, like training's (``callbacks.progress``): one line when a phase starts and
    then every ``every_seconds``, with the phase's units done, the elapsed time and the phase's ETA (its units
    left x its seconds per unit so far). ``seconds`` keeps each finished phase's wall time (the benchmark's
    breakdown); ``stream=None`` prints nothing."""

    def __init__(self, stream=sys.stderr, every_seconds: float = 10.0, label: str = "lowrank-head"):
        self.stream, self.every, self.label = stream, every_seconds, label
        self.seconds: dict[str, float] = {}
        self.start = time.monotonic()
        self.name: str | None = None
        self.detail = ""

    def phase(self, name: str, total: int = 0, unit: str = "") -> None:
        self._close()
        self.name, self.total, self.unit, self.done_units, self.detail = name, total, unit, 0, ""
        self.began = self.last = time.monotonic()
        self._line()

    def advance(self, n: int = 1) -> None:
        self.done_units += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def done(self) -> None:
        self._close()
        self.name = None
        self._print(f"done in {clock(time.monotonic() - self.start)}")

    def eta(self) -> float:
        if not self.total or not self.done_units:
            return math.nan
        return (time.monotonic() - self.began) / self.done_units * (self.total - self.done_units)

    def _close(self) -> None:
        if self.name is not None:
            self.seconds[self.name] = self.seconds.get(self.name, 0.0) + time.monotonic() - self.began

    def _line(self) -> None:
        count = f" {self.done_units:,}/{self.total:,} {self.unit}" if self.total else ""
        detail = f" | {self.detail}" if self.detail else ""
        eta = f" | ETA {clock(self.eta())}" if self.total else ""
        self._print(f"{self.name}{count}{detail} | elapsed {clock(time.monotonic() - self.start)}{eta}")

    def _print(self, text: str) -> None:
        if self.stream is not None:
            print(f"[lmdynamics] {self.label}: {text}", file=self.stream, flush=True)


@torch.no_grad()
def features(model, blocks: torch.Tensor, batch: int = 8, progress: Progress | None = None) -> Features:
    """Final hidden states of ``blocks`` (N x T token ids) under a frozen causal LM, and their targets."""
    model.eval()
    base = model.base_model
    hs, ys = [], []
    for i in range(0, len(blocks), batch):
        x = blocks[i : i + batch]
        out = base(input_ids=x).last_hidden_state  # after the final LayerNorm: what the head reads
        hs.append(out[:, :-1].reshape(-1, out.shape[-1]).float())
        ys.append(x[:, 1:].reshape(-1))
        if progress is not None:
            progress.advance(len(x))
    head = model.get_output_embeddings().weight.detach().float()
    return Features(torch.cat(hs), torch.cat(ys), head)


def head_loss(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, chunk: int = 4096) -> float:
    """Mean next-token cross-entropy of logits h W^T (in chunks, so V x chunk logits at a time)."""
    total = 0.0
    for i in range(0, len(y), chunk):
        total += float(F.cross_entropy(h[i : i + chunk] @ w.T, y[i : i + chunk], reduction="sum"))
    return total / len(y)


def rank_grid(d: int, r_min: int | None = None) -> list[int]:
    """Log grid of ranks from ``r_min`` (default 32, or d/16 for d < 512) to d: powers of two and d."""
    r_min = r_min if r_min is not None else (32 if d >= 512 else max(1, d // 16))
    r_min = max(1, min(r_min, d))
    grid = {r_min, d} | {2**k for k in range(int(math.log2(r_min)) + 1, int(math.log2(d)) + 1)}
    return sorted(r for r in grid if r_min <= r <= d)


def init_factors(head: torch.Tensor, r: int, init: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if init == "svd":
        u, s, vt = torch.linalg.svd(head.double(), full_matrices=False)
        root = s[:r].sqrt()
        return (u[:, :r] * root).float(), (root[:, None] * vt[:r]).float()
    if init == "normal":
        g = torch.Generator().manual_seed(seed)
        v, d = head.shape
        return torch.randn(v, r, generator=g) / math.sqrt(r), torch.randn(r, d, generator=g) / math.sqrt(d)
    raise ValueError(f"init must be 'svd' or 'normal', got {init!r}")


def train_head(train: Features, r: int | None, steps: int = 300, lr: float = 1e-4, batch: int = 1024,
               init: str = "svd", seed: int = 0, weight_decay: float = 0.0,
               progress: Progress | None = None) -> torch.Tensor:
    """Train W = A B (or, with ``r=None``, a full V x d head from the same init) on cached features;
    returns W. AdamW(0.9, 0.95) as in the Pythia recipe, constant learning rate, batches of tokens."""
    if r is None:
        a, b = init_factors(train.head, min(train.head.shape), init, seed)
        params = [(a @ b).requires_grad_()]
        weight = lambda: params[0]  # noqa: E731
    else:
        a, b = init_factors(train.head, r, init, seed)
        params = [a.requires_grad_(), b.requires_grad_()]
        weight = lambda: params[0] @ params[1]  # noqa: E731
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = len(train.y)
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=g)
        loss = F.cross_entropy(train.h[idx] @ weight().T, train.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress.advance()
    return weight().detach()


def sweep(train: Features, evaluate: Features, ranks: Sequence[int], train_full: bool = True,
          progress: Progress | None = None, **kwargs) -> dict:
    """Evaluation loss of a trained rank-r head for every r; the references: the checkpoint's own head
    (``full``) and, with ``train_full``, a full V x d head trained from the same start with the same budget
    (``full_trained``: the same function class as r = d, so the two must agree up to optimisation noise)."""
    heads = [int(r) for r in ranks] + ([None] if train_full else [])
    steps = int(kwargs.get("steps", 300))
    if progress is not None:
        progress.phase("training heads", len(heads) * steps, "head steps")
    losses = {}
    for k, r in enumerate(heads, 1):
        if progress is not None:
            progress.detail = f"head {k}/{len(heads)} ({'full' if r is None else f'rank {r}'})"
        losses[r] = head_loss(evaluate.h, evaluate.y, train_head(train, r, progress=progress, **kwargs))
    out = {"ranks": {r: losses[r] for r in heads if r is not None}, "full": head_loss(evaluate.h, evaluate.y, evaluate.head)}
    if train_full:
        out["full_trained"] = losses[None]
    if progress is not None:
        progress.done()
    return out


def run(checkpoint, out, source: str = "python-docs", ranks: Sequence[int] | None = None, r_min: int | None = None,
        train_blocks: int = 1024, eval_blocks: int = 64, context_length: int | None = None,
        cache_dir: str | None = None, progress: Progress | None = None, **train_kwargs):
    """The sweep for one HF checkpoint directory on a corpus tokenised with the checkpoint's own tokenizer;
    writes ``out/lowrank_head.csv`` (r, loss; rows ``full`` and ``full_trained``), the same as rows of
    ``out/metrics.parquet`` (``saturation.rows``); its figure is ``report.figures.bottleneck.plot_lowrank_head``."""
    from pathlib import Path

    import pandas as pd
    from lmdynamics.models.heads import load_causal_lm

    from lmdynamics.atomic import atomic_path
    from lmdynamics.data.datamodule import TextDataModule
    from lmdynamics.saturation.rows import lowrank_rows, write_rows

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a Hugging Face checkpoint directory (no config.json)")
    if not (checkpoint / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: no tokenizer.json beside the weights; save the checkpoint with its tokenizer")
    progress = progress if progress is not None else Progress()
    progress.phase("loading the checkpoint")
    model = load_causal_lm(checkpoint, dtype=torch.float32).eval()
    ctx = context_length or min(int(model.config.max_position_embeddings), 2048)
    progress.phase("tokenising the corpus")
    dm = TextDataModule(source=source, tokenizer=str(checkpoint / "tokenizer.json"), context_length=ctx,
                        val_blocks=None, cache_dir=cache_dir)
    dm.prepare()
    train_x, held_x = dm.train_blocks[:train_blocks], dm.val_all[:eval_blocks]
    progress.phase("hidden states of the frozen backbone", len(train_x) + len(held_x), "blocks")
    train = features(model, train_x, progress=progress)
    held = features(model, held_x, progress=progress)
    d = int(train.head.shape[1])
    ranks = sorted(set(ranks)) if ranks else rank_grid(d, r_min)
    if ranks[-1] > d or ranks[0] < 1:
        raise ValueError(f"ranks must lie in 1..{d} (the hidden size), got {ranks}")
    result = sweep(train, held, ranks, progress=progress, **train_kwargs)
    out = Path(out)
    rows = [{"r": r, "loss": v, "reference": ""} for r, v in result["ranks"].items()]
    rows += [{"r": d, "loss": result["full"], "reference": "full"}]
    if "full_trained" in result:
        rows += [{"r": d, "loss": result["full_trained"], "reference": "full_trained"}]
    with atomic_path(out / "lowrank_head.csv") as tmp:
        pd.DataFrame(rows).assign(checkpoint=str(checkpoint), train_tokens=len(train.y), eval_tokens=len(held.y)).to_csv(tmp, index=False)
    write_rows(out, lowrank_rows(result, checkpoint))
    return out / "lowrank_head.csv", result
