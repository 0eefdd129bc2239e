"""The LightningModule: a GPT-NeoX causal LM with the Pythia optimiser recipe.

Recipe (docs/science.md sec. 1): AdamW(0.9, 0.95), eps 1e-8, weight decay 0.1 (not on biases and norms, as
GPT-NeoX does), gradient clipping 1.0 (the Trainer's ``gradient_clip_val``), linear warmup over 1% of the
steps, cosine decay to 10% of the peak learning rate.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import lightning as L
import torch
from transformers import GPTNeoXForCausalLM

from ..distributed import full_shape
from ..layout import tokens_at
from ..models.heads import build_causal_lm
from ..models.zoo import ModelSpec, count_parameters, pythia_parameter_count, pythia_size
from .deepspeed_batch import give_deepspeed_the_micro_batch
from .speed import SpeedSpec, model_flops_per_token, peak_flops


@dataclass
class OptimSpec:
    """Optimiser and schedule. ``lr`` None takes the published peak LR of the named Pythia size (else 1e-3)."""

    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1
    head_lr_multiplier: float = 1.0  # the output head's learning rate over the rest's (tied: the shared matrix)
    head_weight_decay: float | None = None  # the head's weight decay; None: weight_decay


@dataclass
class ResolvedOptim:
    """``OptimSpec`` with the learning rate filled in, and how it differs from a named size's published recipe."""

    lr: float
    overrides: dict[str, object]
    published: dict[str, object]


def resolve_optim(optim: OptimSpec, size: str | None) -> ResolvedOptim:
    """Fill ``lr`` (the size's published peak LR, else 1e-3) and list fields that differ from the Pythia recipe."""
    if size is None:
        return ResolvedOptim(optim.lr if optim.lr is not None else 1e-3, {}, {})
    published = {**asdict(OptimSpec()), "lr": pythia_size(size).peak_lr}
    used = {**asdict(optim), "lr": optim.lr if optim.lr is not None else published["lr"]}
    used["betas"] = tuple(used["betas"])
    published["betas"] = tuple(published["betas"])
    overrides = {k: v for k, v in used.items() if v != published[k]}
    return ResolvedOptim(used["lr"], overrides, {k: published[k] for k in overrides})


def describe_model(spec: ModelSpec, parameters: int) -> str:
    """The start-of-run line: the architecture actually built and its parameter count against the reference."""
    s = spec.resolved()
    overrides = spec.overrides()
    if overrides:
        published = spec.published()
        label = f"pythia-{spec.size} with " + ", ".join(f"{k}={v} (published {published[k]})" for k, v in overrides.items())
    else:
        label = spec.name
    formula = pythia_parameter_count(s.num_layers, s.hidden_size, s.vocab_size)
    published = spec.published_parameters()
    if published is not None and not overrides and not s.head.label:  # a named size as published, plain head
        check = f"= published pythia-{spec.size} count"
    elif parameters == formula:
        check = "= L(12d^2+13d)+2Vd+2d"
    else:
        check = f"(formula L(12d^2+13d)+2Vd+2d gives {formula:,})"
    return (f"model {label}: {s.num_layers} layers, d_model {s.hidden_size}, {s.num_heads} heads, vocab {s.vocab_size}, "
            f"context {s.context_length}, rotary {s.rotary_pct:g}, {'parallel' if s.parallel_residual else 'sequential'} "
            f"residual, {'tied' if s.tie_embeddings else 'untied'} {s.head.label or 'plain'} head: {parameters:,} parameters {check}")


def step_tokens(datamodule, trainer) -> int:
    """Tokens in one optimizer step: micro-batch x context x accumulation x data-parallel ranks."""
    return datamodule.batch_size * datamodule.context_length * trainer.accumulate_grad_batches * trainer.world_size


EXCESS_LOSS = "excess_loss"  # val_loss minus the data's exact entropy floor (synthetic language only)

# Per-step values that depend on wall-clock time: they differ between two identical runs.
WALL_CLOCK_VALUES = ("tokens_per_sec", "model_tflops", "mfu", "measure_share")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def warmup_steps(warmup_fraction: float, total: int) -> int:
    """Warmup length in updates: ``warmup_fraction`` of ``total`` rounded, at least one update when the fraction
    is positive (a short run's 1% must not round to no warmup at all)."""
    if warmup_fraction <= 0:
        return 0
    return min(total, max(1, round(warmup_fraction * total)))


def lr_multiplier(update: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning rate of update ``update`` (1-based: the first optimizer step is update 1) over the peak.

    Linear warmup to the peak at update ``warmup`` (update k uses k / warmup), then cosine decay reaching
    ``min_ratio`` exactly at update ``total`` (GPT-NeoX's AnnealingLR cosine; Pythia: 1% warmup, min 0.1).
    """
    if update <= warmup:
        return update / warmup
    progress = min(1.0, (update - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def decays(p: torch.Tensor) -> bool:
    """Weight decay goes to matrices; biases and LayerNorm weights are vectors and get none. Under ZeRO-3 a
    partitioned parameter is an empty flat shard: read its full shape, or every
    matrix looks like a vector (nothing decays, and DeepSpeed drops the empty group the scheduler still counts)."""
    return len(full_shape(p)) >= 2


def parameter_groups(model: torch.nn.Module, head_ids: set[int]) -> dict[tuple[bool, bool], list]:
    """``(in the head, decays) -> [(name, parameter)]`` over the model's parameters, every key present."""
    groups: dict[tuple[bool, bool], list] = {(h, d): [] for h in (False, True) for d in (True, False)}
    for name, p in model.named_parameters():
        groups[(id(p) in head_ids, decays(p))].append((name, p))
    return groups


class LMModule(L.LightningModule):
    """GPT-NeoX causal language model.

    Args:
        model: the architecture: a Pythia size (``size: 160m``) or a new one (``num_layers``, ``hidden_size``,
            ``num_heads``). Empty by default, so a named size is never filled from a class default.
            ``vocab_size`` left empty takes the size's padded vocabulary, or without a size the tokenizer's
            vocabulary rounded up to a multiple of 128.
        optim: optimiser and learning-rate schedule.
        speed: attention kernel, activation checkpointing, ``torch.compile``, fused AdamW, and the peak for MFU.
    """

    def __init__(self, model: ModelSpec = ModelSpec(), optim: OptimSpec = OptimSpec(), speed: SpeedSpec = SpeedSpec()):
        super().__init__()
        self.spec = replace(model)
        self.optim = replace(optim)
        self.speed = replace(speed)
        if self.optim.head_lr_multiplier <= 0:
            raise ValueError(f"model.optim.head_lr_multiplier must be positive, got {self.optim.head_lr_multiplier}")
        self.save_hyperparameters({"model": asdict(self.spec), "optim": asdict(self.optim), "speed": asdict(self.speed)})
        self.model: GPTNeoXForCausalLM | None = None
        self.flops_per_token: int | None = None
        self._peak_flops: float | None = None
        self._step_started = None  # per optimizer step: start time, learning rate and summed micro-batch loss
        self._step_lr = float("nan")
        self._step_loss: torch.Tensor | None = None
        self.last_grad_norm = float("nan")

    # -- model -------------------------------------------------------------------------------------
    def resolve_spec(self, dm=None) -> ModelSpec:
        """The architecture with vocabulary and context length made consistent with the data (``dm``)."""
        if dm is None and self._trainer is not None:
            dm = getattr(self.trainer, "datamodule", None)
        spec = self.spec
        if dm is not None:
            dm.prepare()
            if spec.vocab_size is None and spec.size is None:
                spec.vocab_size = -(-dm.vocab_size // 128) * 128
            spec.context_length = dm.context_length
        spec = spec.resolved()
        if dm is not None and spec.vocab_size < dm.vocab_size:
            raise ValueError(f"model vocabulary {spec.vocab_size} is smaller than the tokenizer's {dm.vocab_size} ids; raise model.vocab_size or use another tokenizer")
        self.spec = spec
        return spec

    def setup(self, stage: str) -> None:
        give_deepspeed_the_micro_batch(self.trainer)  # before the strategy's setup reads its config

    def configure_model(self) -> None:
        if self.model is not None:
            return
        spec = self.resolve_spec()
        hf_config = spec.to_hf_config()
        hf_config._attn_implementation = self.speed.attn_implementation
        self.model = build_causal_lm(hf_config, spec.head)
        if self.speed.activation_checkpointing:
            if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The compiled model is kept out of the module tree (no second copy of the weights in state dicts).
        object.__setattr__(self, "_step_model", torch.compile(self.model) if self.speed.compile else self.model)
        n = count_parameters(self.model)
        self.flops_per_token = model_flops_per_token(n, spec.vocab_size, spec.num_layers, spec.hidden_size,
                                                     spec.context_length, tied=spec.tie_embeddings)
        published = spec.published_parameters()
        if published is not None and not spec.overrides() and not spec.head.label and n != published:
            raise RuntimeError(f"built {n:,} parameters for pythia-{spec.size}, but it has {published:,}: the architecture is wrong")
        if self.global_rank == 0:
            print(f"[lmdynamics] {describe_model(spec, n)}")
            o = self.resolved_optim()
            if o.overrides:
                print(f"[lmdynamics] optimiser differs from the published pythia-{spec.size} recipe: "
                      + ", ".join(f"{k} {v} (published {o.published[k]})" for k, v in o.overrides.items()))

    def resolved_optim(self) -> ResolvedOptim:
        """The optimiser settings this run uses, with the published recipe's where they differ."""
        return resolve_optim(self.optim, self.spec.size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits

    def lm_loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the block (every position predicts the following token)."""
        logits = self._step_model(input_ids=input_ids).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), input_ids[:, 1:].reshape(-1)
        )

    # -- training ----------------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step: micro-batch x context x accumulation x data-parallel ranks."""
        return step_tokens(self.trainer.datamodule, self.trainer)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._step_started is None:  # the first micro-batch of an optimizer step
            self._step_started = time.perf_counter()
            self._step_lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this update will use
            self._step_loss = torch.zeros(2, dtype=torch.float64, device=self.device)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.lm_loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at step {self.global_step + 1}; last good checkpoint: {self._last_good_checkpoint()}")
        predicted = batch[:, 1:].numel()
        self._step_loss += torch.stack([loss.detach().double() * predicted,
                                        torch.tensor(float(predicted), dtype=torch.float64, device=self.device)])
        return loss

    def _last_good_checkpoint(self) -> str:
        from pathlib import Path

        root = Path(self.trainer.default_root_dir)
        found = sorted((root / "checkpoints").glob("step[0-9]*")) + sorted((root / "lightning").glob("last*.ckpt"))
        return ", ".join(str(p) for p in found[-2:]) if found else "none saved yet"

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by global norm (the Trainer's ``gradient_clip_val``) and keep the pre-clipping norm for the log."""
        if gradient_clip_algorithm not in (None, "norm"):
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), float("inf"))  # measured, not clipped
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        max_norm = gradient_clip_val if gradient_clip_val else float("inf")
        self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Log the values of the optimizer step just completed, once, at its last micro-batch.

        Row ``step`` k describes update k: ``train_loss`` is the mean next-token loss over that update's whole
        global batch (every micro-batch on every rank, weighted by predicted tokens), ``lr`` the rate update k
        used, ``grad_norm`` the global gradient norm before clipping, ``tokens`` the tokens consumed by updates
        1..k, ``tokens_per_sec`` the global batch's tokens over the update's wall time on rank 0.
        """
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches:
            return
        elapsed = time.perf_counter() - self._step_started
        self._step_started = None
        step = self.global_step  # already incremented: steps completed, i.e. the number of this update
        strategy_model = getattr(self.trainer.strategy, "model", None)
        if hasattr(strategy_model, "get_global_grad_norm"):  # DeepSpeed clips and measures the norm itself
            self.last_grad_norm = strategy_model.get_global_grad_norm()
        loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="sum")  # every rank's micro-batches
        tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("nan")
        train_loss = float(loss_sum / predicted)
        self.log("train_loss", train_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        if step % self.trainer.log_every_n_steps and step != self.trainer.max_steps:
            return
        values = {
            "train_loss": train_loss,
            "grad_norm": float(self.last_grad_norm) if self.last_grad_norm is not None else float("nan"),
            "lr": self._step_lr,
            "tokens": float(tokens_at(step, self.tokens_per_step)),
            "tokens_per_sec": tokens_per_sec,
            "model_tflops": tokens_per_sec * self.flops_per_token / 1e12,
            "measure_share": self._measure_share(),
        }
        if self._peak_flops:
            values["mfu"] = tokens_per_sec * self.flops_per_token / (self._peak_flops * self.trainer.world_size)
        # Straight to the loggers, labelled with the update's number: ``self.log`` costs ~1 ms per key on the
        # step's critical path (Lightning's result collection), 2-4% of a small model's step.
        self._to_loggers(values, step)

    def _to_loggers(self, values: dict[str, float], step: int) -> None:
        """Write values to every logger at ``step``, the number of optimizer steps done: training values, validation
        values and checkpoints all carry the same step (Lightning's own logging step lags it by one)."""
        for logger in self.loggers:
            logger.log_metrics(values, step=step)
            logger.save()  # as Lightning's own logging does after each write

    def on_train_start(self) -> None:
        self._peak_flops = peak_flops(self.trainer, self.speed)
        self._fit_started = time.perf_counter()

    def _measure_share(self) -> float:
        """Share of this process's wall time since training started spent in the live measurement callbacks."""
        from ..callbacks.base import MeasurementCallback

        seconds = sum(c.seconds for c in self.trainer.callbacks if isinstance(c, MeasurementCallback))
        return seconds / max(time.perf_counter() - self._fit_started, 1e-9)

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self.lm_loss(batch)
        self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=self.device)])

    def on_validation_epoch_end(self) -> None:
        total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")
        val_loss = (total[0] / total[1]).float()
        values = {"val_loss": val_loss, "val_ppl": torch.exp(val_loss)}
        floor = getattr(self.trainer.datamodule, "entropy_floor", None) if self._trainer is not None else None
        if floor is not None:  # a language with a known optimum (data.source: synthetic): distance from it, nats
            values[EXCESS_LOSS] = val_loss - floor
        # While fitting, the values go to the loggers at this update's step (as the train values); Lightning's
        # logging would label them one step early. An evaluation (validate) writes every row at its checkpoint's
        # step, so Lightning's logging, which also prints the results, is the one write there.
        fitting = self.trainer.state.fn == "fit"
        for name, value in values.items():
            self.log(name, value, prog_bar=name == "val_loss", on_step=False, on_epoch=True, logger=not fitting)
        if fitting and not self.trainer.sanity_checking:
            self._to_loggers({name: float(value) for name, value in values.items()}, self.global_step)

    def schedule_description(self) -> dict:
        """The learning-rate schedule this run uses (printed at the start of fit and by ``--run.dry_run``)."""
        total = max(1, self.trainer.max_steps)
        return {"peak_lr": self.resolved_optim().lr, "max_steps": total,
                "warmup_steps": warmup_steps(self.optim.warmup_fraction, total),
                "warmup_fraction": self.optim.warmup_fraction, "min_lr_ratio": self.optim.min_lr_ratio}

    def configure_optimizers(self):
        o = self.optim
        # the head gets its own groups only when its settings differ (else the published two groups)
        separate = o.head_lr_multiplier != 1.0 or (o.head_weight_decay is not None and o.head_weight_decay != o.weight_decay)
        head_ids = {id(p) for p in self.model.get_output_embeddings().parameters()} if separate else set()
        groups = {key: [p for _, p in named] for key, named in parameter_groups(self.model, head_ids).items()}
        sched = self.schedule_description()
        peak, head_decay = sched["peak_lr"], o.weight_decay if o.head_weight_decay is None else o.head_weight_decay
        param_groups = [{"params": groups[(head, decay)], "weight_decay": (head_decay if head else o.weight_decay) if decay else 0.0,
                         "lr": peak * (o.head_lr_multiplier if head else 1.0), "name": f"{'head' if head else 'body'}_{'decay' if decay else 'no_decay'}"}
                        for head, decay in groups if groups[(head, decay)] or (head, decay) == (False, True)]
        optimizer = torch.optim.AdamW(
            param_groups,
            lr=sched["peak_lr"], betas=tuple(o.betas), eps=o.eps, fused=self.speed.fused_adamw or None,
        )
        total, warmup = sched["max_steps"], sched["warmup_steps"]
        if self.global_rank == 0 and self.trainer.state.fn == "fit":
            exact = o.warmup_fraction * total
            note = "" if exact == warmup else f" ({o.warmup_fraction:g} of {total} steps = {exact:g}, rounded)"
            print(f"[lmdynamics] lr schedule: peak {sched['peak_lr']:g}, linear warmup over {warmup} update(s){note}, "
                  f"cosine to {o.min_lr_ratio:g} x peak at update {total}")
        # LambdaLR passes the number of scheduler steps taken so far: update k runs after k - 1 of them.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_multiplier(s + 1, total, warmup, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
