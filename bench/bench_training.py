"""Training throughput: the Lightning path (LMModule + Trainer, logging on) against a bare PyTorch loop.

Same model (the demo config's shape), same batches, same AdamW param groups, clipping and LR schedule.
Runs alternate (bare, Lightning, bare, Lightning, ...) so drift on a shared machine hits both alike; the
ratio of medians is printed. Target: Lightning / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch

from lmdynamics.data.datamodule import TextDataModule
from lmdynamics.models.zoo import ModelSpec
from lmdynamics.training.module import LMModule, OptimSpec, lr_multiplier, warmup_steps


class _Timer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, *args):
        self.end = time.perf_counter()


def lightning_run(dm, spec, optim, steps, warmup, tmp) -> float:
    torch.manual_seed(0)
    timer = _Timer(warmup)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=L.pytorch.loggers.CSVLogger(tmp), log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, use_distributed_sampler=False, gradient_clip_val=1.0,
                        callbacks=[timer], default_root_dir=tmp)
    trainer.fit(LMModule(spec, optim), datamodule=dm)
    return (steps - warmup) * dm.batch_size * dm.context_length / (timer.end - timer.start)


def bare_run(dm, spec, optim, steps, warmup) -> float:
    torch.manual_seed(0)
    module = LMModule(spec, optim)
    module.configure_model()
    model = module.model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=optim.lr, betas=optim.betas, eps=optim.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s + 1, steps, warmup_steps(0.01, steps), optim.min_lr_ratio))
    from lmdynamics.data.packing import StepBatchSampler

    sampler = StepBatchSampler(len(dm.train_blocks), dm.batch_size, dm.seed, steps)
    start = None
    for step, idx in enumerate(sampler):
        if step == warmup:
            start = time.perf_counter()
        batch = dm.train_blocks[idx]
        logits = model(input_ids=batch).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        float(loss)  # the Lightning path also reads the loss every step (logging)
    return (steps - warmup) * dm.batch_size * dm.context_length / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (smoke run)")
    args = ap.parse_args()
    steps, warmup, repeats = (12, 3, 1) if args.quick else (60, 10, 3)
    dm = TextDataModule(tokenizer="bpe:4096", context_length=128, batch_size=16)
    dm.prepare()
    spec = ModelSpec(num_layers=4, hidden_size=128, num_heads=4, context_length=128)
    spec.vocab_size = -(-dm.vocab_size // 128) * 128
    optim = OptimSpec(lr=2e-3)
    bare, light = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            bare.append(bare_run(dm, spec, optim, steps, warmup))
            light.append(lightning_run(dm, spec, optim, steps, warmup, tmp))
    b, lt = statistics.median(bare), statistics.median(light)
    print(f"threads: {torch.get_num_threads()}  model: demo shape (4 x 128, vocab {spec.vocab_size})  batch 16 x 128 tokens  {steps - warmup} timed steps x {repeats}")
    print(f"{'bare PyTorch loop':<22}{b:>12,.0f} tokens/s   runs: {', '.join(f'{x:,.0f}' for x in bare)}")
    print(f"{'Lightning LMModule':<22}{lt:>12,.0f} tokens/s   runs: {', '.join(f'{x:,.0f}' for x in light)}")
    print(f"ratio Lightning / bare: {lt / b:.3f}   (target >= 0.95)")


if __name__ == "__main__":
    main()
