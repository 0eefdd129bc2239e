"""LightningDataModule: corpus -> tokenizer -> packed, cached blocks -> deterministic train/validation loaders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..atomic import atomic_path
from .corpus import BUNDLED, load_corpus, open_rows
from .packing import StepBatchSampler, pack, split_documents, tokenize_stream
from .streaming import StreamingBlocks, take_documents
from .synthetic import SOURCE as SYNTHETIC
from .synthetic import SyntheticBlocks, SyntheticLanguage, SyntheticSpec, identity_tokenizer
from .tokenizer import definition_hash, load_tokenizer


def default_cache_dir() -> Path:
    return Path(os.environ.get("LMDYNAMICS_CACHE", Path.home() / ".cache" / "lmdynamics"))


class TextDataModule(L.LightningDataModule):
    """Packed language-modelling data.

    Args:
        source: ``python-docs`` (bundled, default), ``synthetic`` (a language of chosen softmax rank, set by
            ``synthetic``; see ``lmdynamics.data.synthetic``), a local .txt/.jsonl/.parquet file or directory, or a hub
            dataset name (e.g. ``EleutherAI/pile``; set ``streaming`` and ``max_documents`` for huge ones).
        tokenizer: a hub name (``EleutherAI/pythia-70m``), a local ``tokenizer.json``, or ``bpe:<vocab>`` to
            train a byte-level BPE on the training split (cached).
        context_length: tokens per packed block (the model's sequence length).
        batch_size: blocks per micro-batch on each device.
        global_batch_size: blocks per optimizer step over all devices; when set, the CLI derives
            ``trainer.accumulate_grad_batches`` = global / (batch_size x devices x nodes) (must divide).
        val_fraction: share of documents held out for validation (chosen by ``seed``).
        val_blocks: cap on validation blocks used per validation run (None: all).
        seed: fixes the document split and the batch order.
        streaming: read a file or hub corpus as a stream, tokenising and packing on the fly (for corpora too
            large to hold, e.g. the Pile); the first ``val_documents`` documents are the validation split,
            ``shuffle_buffer`` adds a seeded buffer shuffle of the rest. Needs a hub or file tokenizer.
        max_documents: use only the first N (training) documents.
        synthetic: the synthetic language, when ``source`` is ``synthetic`` (its tokenizer is the identity).
    """

    def __init__(
        self,
        source: str = BUNDLED,
        tokenizer: str = "bpe:4096",
        context_length: int = 128,
        batch_size: int = 16,
        global_batch_size: int | None = None,
        val_fraction: float = 0.05,
        val_blocks: int | None = 64,
        seed: int = 1234,
        text_field: str = "text",
        hub_config: str | None = None,
        split: str = "train",
        streaming: bool = False,
        val_documents: int = 1000,
        shuffle_buffer: int | None = None,
        max_documents: int | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        synthetic: SyntheticSpec = SyntheticSpec(),
    ):
        super().__init__()
        if context_length <= 1:
            raise ValueError(f"data.context_length must be at least 2, got {context_length}")
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        self.source, self.tokenizer_spec = source, tokenizer
        self.context_length, self.batch_size = context_length, batch_size
        self.global_batch_size = global_batch_size
        self.val_fraction, self.val_blocks, self.seed = val_fraction, val_blocks, seed
        self.text_field, self.hub_config, self.split = text_field, hub_config, split
        self.streaming, self.max_documents = streaming, max_documents
        self.val_documents, self.shuffle_buffer = val_documents, shuffle_buffer
        self._val_rows = 0
        self._prepared = False
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.num_workers = num_workers
        self.tokenizer = None
        self.train_blocks: torch.Tensor | None = None
        self.val_blocks_tensor: torch.Tensor | None = None
        self.val_all: torch.Tensor | None = None
        self.corpus_description = ""
        self.corpus_id = ""
        self.synthetic = synthetic
        self.language: SyntheticLanguage | None = None
        self.entropy_floor: float | None = None  # the synthetic language's exact floor (nats); None for text

    # -- preparation -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load, tokenise (cached) and pack. Idempotent; called by ``setup`` and by tools that need the data."""
        if self._prepared:
            return
        if self.source == SYNTHETIC:
            self._prepare_synthetic()
            self._prepared = True
            return
        if self.streaming:
            self._prepare_stream()
            self._prepared = True
            return
        corpus = load_corpus(self.source, text_field=self.text_field, hub_config=self.hub_config,
                             split=self.split, streaming=self.streaming, max_documents=self.max_documents,
                             cache_dir=self.cache_dir)
        self.corpus_description, self.corpus_id = corpus.description, corpus.corpus_id
        train_docs, val_docs = split_documents(corpus.documents, self.val_fraction, self.seed)
        self.tokenizer = load_tokenizer(self.tokenizer_spec, documents=train_docs,
                                        corpus_id=f"{corpus.corpus_id}-{self.seed}-{self.val_fraction}",
                                        cache_dir=self.cache_dir)
        eos = self.eos_id
        key = hashlib.sha256(
            f"{corpus.corpus_id}|{self.seed}|{self.val_fraction}|{definition_hash(self.tokenizer)}".encode()
        ).hexdigest()[:20]
        streams = {}
        for name, docs in (("train", train_docs), ("val", val_docs)):
            path = self.cache_dir / "tokens" / f"{key}-{name}.npy"
            if path.is_file():
                streams[name] = np.load(path)
            else:
                streams[name] = tokenize_stream(docs, self.tokenizer, eos)
                with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, streams[name])
        self.train_blocks = pack(streams["train"], self.context_length)
        self.val_all = pack(streams["val"], self.context_length)  # the whole held-out split (probes draw from it)
        self.val_blocks_tensor = self.val_all
        if len(self.val_all) == 0:
            raise ValueError(f"the validation split has fewer than data.context_length={self.context_length} tokens; raise data.val_fraction or shorten the context")
        if self.val_blocks is not None:
            self.val_blocks_tensor = self.val_blocks_tensor[: self.val_blocks]
        self._prepared = True

    def _prepare_synthetic(self) -> None:
        """The synthetic language: identity tokenizer, validation blocks drawn from its own split, exact floor."""
        spec = self.synthetic if isinstance(self.synthetic, SyntheticSpec) else SyntheticSpec(**self.synthetic)
        self.language = SyntheticLanguage(spec)
        self.tokenizer = identity_tokenizer(spec.vocab_size)
        self.corpus_id = f"{spec.language_id}-seed{self.seed}"
        self.corpus_description = (f"synthetic language: V={spec.vocab_size}, rank R={spec.rank}, {spec.classes} classes, "
                                   f"lags {list(spec.lags)}, logit scale {spec.logit_scale:g}, seed {spec.seed}"
                                   + (f", Zipf exponent {spec.zipf:g}" if spec.zipf else "")
                                   + (f", {spec.train_blocks} training blocks repeated in epochs" if spec.train_blocks else ""))
        n_val = max(self.val_blocks or 0, 256)  # the probe draws from all of them
        self.val_all = self.language.blocks(range(n_val), self.context_length, self.seed, "val")
        self.val_blocks_tensor = self.val_all[: self.val_blocks] if self.val_blocks is not None else self.val_all
        self.entropy_floor = self.language.entropy_floor(self.context_length)

    def run_info(self) -> dict:
        """What run.json records about the data beyond the corpus id (the synthetic language and its floor)."""
        if self.language is None:
            return {}
        spec = self.language.spec
        return {"synthetic": {**{k: getattr(spec, k) for k in ("vocab_size", "rank", "classes", "logit_scale", "seed", "zipf", "train_blocks")},
                              "lags": list(spec.lags), "reachable_states": len(self.language.reachable_states()),
                              "entropy_floor": self.entropy_floor,
                              "val_true_loss": self.language.true_loss(self.val_blocks_tensor)}}

    def _open_stream(self):
        rows, corpus_id, description = open_rows(self.source, hub_config=self.hub_config, split=self.split,
                                                 streaming=True, cache_dir=self.cache_dir)
        return rows, corpus_id, description

    def _prepare_stream(self) -> None:
        if self.source == BUNDLED:
            raise ValueError("data.streaming applies to files and hub datasets; the bundled corpus is small enough to hold")
        if self.tokenizer_spec.startswith("bpe:"):
            raise ValueError("data.tokenizer bpe:<vocab> is trained on the whole corpus; with data.streaming give a hub tokenizer or a tokenizer.json")
        self.tokenizer = load_tokenizer(self.tokenizer_spec, cache_dir=self.cache_dir)
        rows, self.corpus_id, self.corpus_description = self._open_stream()
        val_docs, counted = [], 0
        for row in rows:
            counted += 1
            if self.text_field not in row:
                raise ValueError(f"data.source {self.source}: rows have no field {self.text_field!r} (fields: {sorted(row)}); set data.text_field")
            if row[self.text_field] and row[self.text_field].strip():
                val_docs.append(row[self.text_field])
                if len(val_docs) >= self.val_documents:
                    break
        self._val_rows = counted
        self.val_all = pack(tokenize_stream(val_docs, self.tokenizer, self.eos_id), self.context_length)
        if len(self.val_all) == 0:
            raise ValueError(f"the first {self.val_documents} streamed documents hold fewer than {self.context_length} tokens; raise data.val_documents")
        self.val_blocks_tensor = self.val_all[: self.val_blocks] if self.val_blocks is not None else self.val_all

    def _training_texts(self):
        """The training documents of the stream, in the same order on every call."""
        rows, _, _ = self._open_stream()
        rows = rows.skip(self._val_rows)
        if self.shuffle_buffer:
            rows = rows.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        return take_documents(rows, self.text_field, self.max_documents)

    @property
    def eos_id(self) -> int:
        tok = self.tokenizer
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
        if eos is None or eos < 0:
            raise ValueError(f"tokenizer {self.tokenizer_spec!r} has no end-of-text token to separate documents")
        return int(eos)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit (the model's vocabulary must be at least this)."""
        return len(self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # -- loaders -----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches if trainer else 1
        max_steps = trainer.max_steps if trainer else 1
        start = trainer.global_step if trainer else 0  # restored from the checkpoint when resuming
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        order = {"seed": self.seed, "micro_batch_size": self.batch_size * world, "accumulate": accumulate,
                 "corpus": self.corpus_id}
        position = (lambda: trainer.global_step * accumulate) if trainer else (lambda: start * accumulate)
        if self.language is not None:
            blocks = SyntheticBlocks(self.language, self.seed, self.context_length, self.batch_size, max_steps,
                                     accumulate, start, rank, world)
            return ResumableLoader(blocks, start * accumulate, position, order, batch_size=None, num_workers=0)
        if self.streaming:
            blocks = StreamingBlocks(self._training_texts, self.tokenizer, self.eos_id, self.context_length,
                                     self.batch_size, max_steps, accumulate, start, rank, world)
            return ResumableLoader(blocks, start * accumulate, position, order, batch_size=None, num_workers=0)
        order["blocks"] = len(self.train_blocks)
        sampler = StepBatchSampler(len(self.train_blocks), self.batch_size * world, self.seed, max_steps,
                                   accumulate, start_step=start)
        return ResumableLoader(TensorDataset(self.train_blocks), start * accumulate, position, order,
                               batch_sampler=_RankSlice(sampler, rank, world), num_workers=self.num_workers,
                               collate_fn=_stack)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.val_blocks_tensor), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=_stack)


def _stack(rows) -> torch.Tensor:
    return torch.stack([r[0] for r in rows])


class ResumableLoader(DataLoader):
    """The training loader; Lightning treats it as resumable mid-epoch (it has ``state_dict``/``load_state_dict``).

    The batch order is a pure function of the micro-batch index, and the loader is built after the
    checkpoint is restored, starting at the resume point (``start``), so there is nothing to fast-forward.
    Its state records the micro-batch the checkpoint was taken at and what fixes the order (seed, global
    micro-batch size, accumulation, corpus); restoring checks both, so a resume that would silently see
    other batches than the interrupted run fails with the reason instead.
    """

    def __init__(self, dataset, start: int, position, order: dict, **kwargs):
        super().__init__(dataset, **kwargs)
        self._start, self._position, self._order = start, position, order

    def state_dict(self) -> dict:
        return {"micro_batch": int(self._position()), "order": dict(self._order)}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("order", {})
        changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in self._order.items() if k in saved and saved[k] != v]
        if changed:
            raise ValueError(f"the training batches differ from the checkpoint's ({'; '.join(changed)}): an exact resume needs the run's data settings; resume with the run's config.yaml")
        if "micro_batch" in state and int(state["micro_batch"]) != self._start:
            raise ValueError(f"the checkpoint was taken at micro-batch {state['micro_batch']}, inside an optimizer step (this run resumes at micro-batch {self._start}); resume from the run's lightning/last.ckpt")


class _RankSlice(torch.utils.data.Sampler[list[int]]):
    """This rank's share of each global micro-batch (so the global batch order is the same for any world size)."""

    def __init__(self, sampler: StepBatchSampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        for batch in self.sampler:
            yield batch[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.sampler)
