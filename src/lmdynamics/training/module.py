"""The LightningModule: a GPT-NeoX causal LM with the Pythia optimiser recipe.

Recipe (SCIENCE.md section 1): AdamW(0.9, 0.95), eps 1e-8, weight decay 0.1 (not on biases and norms, as
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

from ..models.zoo import PYTHIA_SIZES, ModelSpec, count_parameters, pythia_parameter_count


@dataclass
class OptimSpec:
    """Optimiser and schedule. ``lr`` None takes the Pythia peak LR of the named size (else 1e-3)."""

    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LMModule(L.LightningModule):
    """GPT-NeoX causal language model.

    Args:
        model: the architecture (a Pythia size or a new one). ``vocab_size`` left empty takes the
            tokenizer's vocabulary rounded up to a multiple of 128.
        optim: optimiser and learning-rate schedule.
    """

    def __init__(self, model: ModelSpec = ModelSpec(num_layers=4, hidden_size=128, num_heads=4), optim: OptimSpec = OptimSpec()):
        super().__init__()
        self.spec = replace(model)
        self.optim = replace(optim)
        self.save_hyperparameters({"model": asdict(self.spec), "optim": asdict(self.optim)})
        self.model: GPTNeoXForCausalLM | None = None
        self._step_started = None
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

    def configure_model(self) -> None:
        if self.model is not None:
            return
        spec = self.resolve_spec()
        self.model = GPTNeoXForCausalLM(spec.to_hf_config())
        n = count_parameters(self.model)
        formula = pythia_parameter_count(spec.num_layers, spec.hidden_size, spec.vocab_size)
        if self.global_rank == 0:
            label = f"pythia-{spec.size}" if spec.size else "custom size"
            check = "= L(12d^2+13d)+2Vd+2d" if n == formula else f"(formula L(12d^2+13d)+2Vd+2d gives {formula:,})"
            print(f"[lmdynamics] model {label}: {spec.num_layers} layers, d_model {spec.hidden_size}, {spec.num_heads} heads, vocab {spec.vocab_size}, context {spec.context_length}: {n:,} parameters {check}")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits

    def lm_loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the block (every position predicts the following token)."""
        logits = self.model(input_ids=input_ids).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), input_ids[:, 1:].reshape(-1)
        )

    # -- training ----------------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step: micro-batch x context x accumulation x data-parallel ranks."""
        dm, t = self.trainer.datamodule, self.trainer
        return dm.batch_size * dm.context_length * t.accumulate_grad_batches * t.world_size

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._step_started is None:
            self._step_started = time.perf_counter()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.lm_loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at step {self.global_step}; last good checkpoint: {self._last_good_checkpoint()}")
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch.size(0))
        return loss

    def _last_good_checkpoint(self) -> str:
        from pathlib import Path

        root = Path(self.trainer.default_root_dir)
        found = sorted((root / "checkpoints").glob("step[0-9]*")) + sorted((root / "lightning").glob("last*.ckpt"))
        return ", ".join(str(p) for p in found[-2:]) if found else "none saved yet"

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by global norm (the Trainer's ``gradient_clip_val``) and keep the pre-clipping norm for the log."""
        if gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        max_norm = gradient_clip_val if gradient_clip_val else float("inf")
        self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches:
            return
        now = time.perf_counter()
        elapsed = now - self._step_started if self._step_started is not None else float("nan")
        self._step_started = None
        step = self.global_step  # already incremented: steps completed
        strategy_model = getattr(self.trainer.strategy, "model", None)
        if hasattr(strategy_model, "get_global_grad_norm"):  # DeepSpeed clips and measures the norm itself
            self.last_grad_norm = strategy_model.get_global_grad_norm()
        self.log_dict({
            "grad_norm": float(self.last_grad_norm) if self.last_grad_norm is not None else float("nan"),
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            "tokens": float(step * self.tokens_per_step),
            "tokens_per_sec": self.tokens_per_step / elapsed if elapsed > 0 else float("nan"),
        }, on_step=True, on_epoch=False, prog_bar=False)
        self.log("tok/s", self.tokens_per_step / elapsed if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self.lm_loss(batch)
        self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=self.device)])

    def on_validation_epoch_end(self) -> None:
        total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")
        val_loss = (total[0] / total[1]).float()
        self.log("val_loss", val_loss, prog_bar=True, on_step=False, on_epoch=True)
        self.log("val_ppl", torch.exp(val_loss), on_step=False, on_epoch=True)

    def configure_optimizers(self):
        spec, o = self.spec, self.optim
        lr = o.lr if o.lr is not None else (PYTHIA_SIZES[spec.size].peak_lr if spec.size else 1e-3)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, betas=tuple(o.betas), eps=o.eps,
        )
        total = max(1, self.trainer.max_steps)
        warmup = int(round(o.warmup_fraction * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, total, warmup, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
