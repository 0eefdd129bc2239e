"""Offline recording: every checkpoint of run directories or hub repos through the checkpoint sources
(``lmdynamics.checkpoints.open_source``, the loader the analysis uses), one store per model.

The evaluation text is tokenised once with the models' tokenizer; a checkpoint whose tokenizer differs is
refused before anything is written. Validation perplexity per checkpoint: token-weighted over separate
validation blocks when given, else over the evaluation blocks themselves (the store's meta says which).
A rerun skips the steps already stored (resume after a kill).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..checkpoints import open_source, parse_steps
from ..distributed import full_shape
from ..probes.sources import load_tokenizer, read_texts, tokenizer_fingerprint
from .record import corpus_perplexity, token_losses
from .storage import TokenTable, TrajectoryStore, model_dir_name
from .tokens import evaluation_blocks

__all__ = ["EvaluationText", "load_model", "record_source", "evaluation_text", "check_same_tokenizer", "record_sources",
           "non_embedding_parameters", "stored_text", "run_validation_text"]


class TokenizerMismatch(ValueError):
    pass


class EvaluationText:
    """Evaluation blocks (N, T), their token table, optional validation blocks, and the tokenizer's fingerprint."""

    def __init__(self, blocks: torch.Tensor, table: TokenTable, tokenizer_fp: str, val_blocks: torch.Tensor | None = None,
                 source: str = ""):
        self.blocks, self.table, self.tokenizer_fp, self.val_blocks, self.source = blocks, table, tokenizer_fp, val_blocks, source


def _token_docs(tokenizer, path):
    for text in read_texts(path):
        yield tokenizer(text, add_special_tokens=False)["input_ids"]


def evaluation_text(tokenizer_file: str | os.PathLike, text: str | os.PathLike, num_blocks: int, block_tokens: int,
                    val_text: str | os.PathLike | None = None, val_blocks: int = 0) -> EvaluationText:
    from ..probes.sources import eos_token_id

    tok = load_tokenizer(tokenizer_file)
    eos = eos_token_id(tok)
    blocks, table = evaluation_blocks(_token_docs(tok, text), num_blocks, block_tokens, eos)
    val = None
    if val_text is not None:
        val, _ = evaluation_blocks(_token_docs(tok, val_text), val_blocks or num_blocks, block_tokens, eos)
    return EvaluationText(blocks, table, tokenizer_fingerprint(tok), val, str(text))


def stored_text(store_dir: str | os.PathLike) -> EvaluationText:
    """The evaluation blocks of an existing store (e.g. one recorded live), to record them from checkpoints."""
    store = TrajectoryStore(store_dir)
    blocks = store.blocks()
    if blocks is None:
        raise ValueError(f"{store_dir} does not keep its token blocks; record from the text instead")
    meta = store.manifest["meta"]
    return EvaluationText(blocks, store.token_table(), meta["tokenizer"], None, f"{store_dir} ({meta.get('text', '')})")


def run_validation_text(run: str | os.PathLike, num_blocks: int | None = None,
                        tokenizer_file: str | os.PathLike | None = None) -> EvaluationText:
    """The first ``num_blocks`` validation blocks of a training run (None: 16, the live default, or all if fewer),
    as its live recorder stores them (``callbacks.trajectories``), with the validation perplexity over every block
    its validation loop uses."""
    from .run_data import prepared_datamodule, run_data_settings
    from .tokens import EvaluationTextTooShort, packed_token_table

    data, corpus_id = run_data_settings(run, tokenizer_file)
    dm = prepared_datamodule(data, corpus_id, str(run))
    val = dm.val_blocks_tensor
    num_blocks = min(16, len(val)) if num_blocks is None else num_blocks
    if not 0 < num_blocks <= len(val):
        raise EvaluationTextTooShort(f"{run} has {len(val)} validation blocks; ask for 1 to {len(val)} (--blocks)")
    blocks = val[:num_blocks]
    return EvaluationText(blocks, packed_token_table(blocks, dm.eos_id), tokenizer_fingerprint(dm.tokenizer), val,
                          f"validation split of {run}")


def load_model(checkpoint, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """A checkpoint (``checkpoints.Checkpoint``) as a causal LM in eval mode (any head, ``load_causal_lm``)."""
    from ..models.heads import load_causal_lm

    return load_causal_lm(checkpoint.path, dtype=dtype).to(device).eval()


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """N of the FLOPs estimate 6 N T, counted as the training's model_tflops counts it
    (``models.sizes.matmul_parameters``: all but the input embedding; a tied head counts)."""
    from ..models.zoo import count_parameters
    from ..models.sizes import matmul_parameters

    emb = model.get_input_embeddings().weight
    tied = getattr(model.get_output_embeddings(), "weight", None) is emb
    vocab, d = full_shape(emb)
    return matmul_parameters(count_parameters(model), vocab, d, tied)


def check_same_tokenizer(tokenizer_file, want_fp: str, label: str) -> None:
    if tokenizer_file is None:
        return
    got = tokenizer_fingerprint(load_tokenizer(tokenizer_file))
    if got != want_fp:
        raise TokenizerMismatch(f"the tokenizer of {label} differs from the evaluation text's tokenizer; "
                                f"record models that share a tokenizer (or give --tokenizer from that model family)")


def _checked_source(spec, text: EvaluationText, steps, cache_dir=None):
    """The source and its selected steps, every checkpoint's tokenizer checked against the text's."""
    source = open_source(spec, cache_dir=cache_dir)
    chosen = source.steps(parse_steps(steps) if isinstance(steps, (str, int)) else steps)
    if not chosen:
        raise ValueError(f"{spec}: no checkpoint selected")
    for step in chosen:
        check_same_tokenizer(source.tokenizer_file(step), text.tokenizer_fp, f"{source.run}@step{step}")
    return source, chosen


def record_source(spec: str | os.PathLike, text: EvaluationText, out_root: str | os.PathLike, steps="all",
                  batch_size: int = 8, device: str = "cpu", log: Callable[[str], None] = print,
                  cache_dir: str | os.PathLike | None = None) -> TrajectoryStore:
    """Record every selected checkpoint of one source into ``out_root/<model>/``; returns the store."""
    source, chosen = _checked_source(spec, text, steps, cache_dir)
    store = None
    for step in chosen:
        if store is not None and store.has(step):
            continue
        ckpt = source.checkpoint(step)
        model = load_model(ckpt, device)
        if int(text.blocks.max()) >= model.config.vocab_size:
            raise TokenizerMismatch(f"{source.run}@step{step}: token id {int(text.blocks.max())} >= the model's vocabulary "
                                    f"({model.config.vocab_size}); the evaluation text was tokenised for another model")
        if store is None:
            meta = {"model": source.run, "source": str(spec), "parameters": non_embedding_parameters(model),
                    "tokens_per_step": source.tokens_per_step, "tokenizer": text.tokenizer_fp, "text": text.source,
                    "block_tokens": int(text.blocks.shape[1]), "val_ppl_on": "validation text" if text.val_blocks is not None else "evaluation text"}
            store = TrajectoryStore.create(Path(out_root) / model_dir_name(source.run), text.table, meta, text.blocks)
            if store.has(step):
                continue
        losses = token_losses(model, text.blocks, batch_size)
        val = token_losses(model, text.val_blocks, batch_size) if text.val_blocks is not None else losses
        store.append(step, losses.reshape(-1).numpy(), corpus_perplexity(val), ckpt.tokens)
        log(f"[trajectories] {source.run} step {step}: validation perplexity {corpus_perplexity(val):.3f}")
        del model
    return store


def record_sources(specs: Sequence[str], text: EvaluationText, out_root, steps="all", batch_size: int = 8,
                   device: str = "cpu", log=print, cache_dir=None) -> list[TrajectoryStore]:
    """Record several sources; every tokenizer is checked before the first value is written."""
    for spec in specs:
        _checked_source(spec, text, steps, cache_dir)
    return [record_source(s, text, out_root, steps, batch_size, device, log, cache_dir) for s in specs]
