"""The optimiser recipe against its published definition (docs/science.md sec. 1), through public behaviour only.

Pythia: AdamW(0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices (not on biases and LayerNorm parameters,
as GPT-NeoX does), gradients clipped to the Trainer's ``gradient_clip_val``, linear warmup over 1% of the
steps, cosine decay to 0.1 x the peak LR; the loss is transformers' own next-token ``labels=`` loss.

The references here are written from that definition, never taken from ``training/module.py``. Convention
of this project (README, "Logged every optimizer step"): update u (1 = the first) uses peak x u / W during
the W warmup updates (the W-th update is the first at the peak, no update runs at LR 0), then the cosine
runs from the peak at update W to floor x peak at the last update, u = T.
"""

import contextlib
import io
import math
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from hypothesis import given, settings
from lightning.pytorch.loggers import Logger
from hypothesis import strategies as st

from lmdynamics.data.datamodule import TextDataModule
from lmdynamics.models.zoo import ModelSpec
from lmdynamics.training.module import LMModule, OptimSpec, lr_multiplier

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
PUBLISHED_PEAK_LR = {"14m": 1e-3, "31m": 1e-3, "70m": 1e-3, "160m": 6e-4, "410m": 3e-4, "1b": 3e-4,
                     "1.4b": 2e-4, "2.8b": 1.6e-4, "6.9b": 1.2e-4, "12b": 1.2e-4}


def reference_multiplier(k: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """LR over the peak after k updates, i.e. of update u = k + 1: linear warmup u / W, then cosine from 1 at
    update W to ``floor`` at update ``total`` (and after it)."""
    u = k + 1
    if u <= warmup:
        return u / warmup
    progress = min(1.0, (u - warmup) / (total - warmup))
    return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2


def decays(name: str, param: torch.Tensor) -> bool:
    """Pythia's weight decay: on weight matrices (embeddings and head included), not on any bias nor on any
    LayerNorm weight or bias."""
    if name.endswith(".bias") or "layernorm" in name or "layer_norm" in name:
        return False
    assert name.endswith(".weight") and param.ndim == 2, name
    return True


def group_of(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    """Parameter id -> its param group; each parameter in exactly one group."""
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in out, "a parameter sits in two groups"
            out[id(p)] = group
    return out


def check_adamw(optimizer, module, betas=(0.9, 0.95), eps=1e-8, decay=0.1) -> None:
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = group_of(optimizer)
    names = dict(module.model.named_parameters())
    assert set(groups) == {id(p) for p in names.values()}  # every parameter is trained
    for name, p in names.items():
        g = groups[id(p)]
        assert g["weight_decay"] == (decay if decays(name, p) else 0.0), name
        assert tuple(g["betas"]) == pytest.approx(betas) and g["eps"] == pytest.approx(eps), name
    # Named explicitly: LayerNorm weights and biases never decay, matrices do.
    for name in ("gpt_neox.layers.0.input_layernorm.weight", "gpt_neox.layers.0.post_attention_layernorm.weight",
                 "gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias",
                 "gpt_neox.layers.0.attention.query_key_value.bias", "gpt_neox.layers.0.mlp.dense_4h_to_h.bias"):
        assert groups[id(names[name])]["weight_decay"] == 0.0, name
    for name in ("gpt_neox.embed_in.weight", "gpt_neox.layers.0.attention.query_key_value.weight",
                 "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"):
        assert groups[id(names[name])]["weight_decay"] == pytest.approx(decay), name


# ----------------------------------------------------------------------------------------- one tiny real fit
TOTAL, WARMUP_FRACTION, PEAK, CLIP = 60, 0.1, 0.01, 0.5  # warmup: round(0.1 x 60) = 6 updates


class RecipeRecorder(L.Callback):
    """Records, per optimizer update: the LR it used, the gradient norm before and after clipping, the loss
    returned by the training step and transformers' ``labels=`` loss of the same batch at the same weights."""

    def __init__(self):
        self.lrs, self.raw_norms, self.clipped_norms, self.losses, self.reference_losses = [], [], [], [], []

    @staticmethod
    def _norm(params) -> float:
        return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None))

    def on_train_start(self, trainer, pl_module):
        def after_update(optimizer, args, kwargs):  # the gradients the update used, already clipped
            self.lrs.append([g["lr"] for g in optimizer.param_groups])
            self.clipped_norms.append(self._norm(p for g in optimizer.param_groups for p in g["params"]))

        trainer.optimizers[0].register_step_post_hook(after_update)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with torch.no_grad():
            self.reference_losses.append(float(pl_module.model(input_ids=batch, labels=batch).loss))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.raw_norms.append(self._norm(pl_module.parameters()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def tiny_module(**optim) -> LMModule:
    return LMModule(model=ModelSpec(num_layers=2, hidden_size=16, num_heads=2),
                    optim=OptimSpec(**{"lr": PEAK, "warmup_fraction": WARMUP_FRACTION, **optim}))


def tiny_data(cache: Path) -> TextDataModule:
    return TextDataModule(source="python-docs", tokenizer="bpe:300", context_length=16, batch_size=4,
                          max_documents=60, val_blocks=8, cache_dir=str(cache))


def tiny_trainer(max_steps: int, callbacks=(), clip=CLIP, **over) -> L.Trainer:
    """A quiet CPU Trainer without validation, checkpoints or logger; ``over`` replaces or adds Trainer arguments."""
    settings = dict(accelerator="cpu", devices=1, max_steps=max_steps, gradient_clip_val=clip, callbacks=list(callbacks),
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    limit_val_batches=0, num_sanity_val_steps=0)
    return L.Trainer(**{**settings, **over})


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    """One token cache for the module's fits: the tokenizer is trained and the splits are tokenized once per
    session instead of once per fit (about 0.4 s each); the cache is keyed by its settings, so sharing it changes
    no fit."""
    return tmp_path_factory.mktemp("recipe-data")


@pytest.fixture
def fitted(data_cache):
    """One tiny fit per test (about a second): a shared fit would hide from mutation testing which test
    checks what."""
    L.seed_everything(3)
    module, data, rec = tiny_module(), tiny_data(data_cache), RecipeRecorder()
    trainer = tiny_trainer(TOTAL, [rec])
    trainer.fit(module, datamodule=data)
    return trainer, module, data, rec


def test_parameter_groups_betas_and_eps(fitted):
    trainer, module, _, _ = fitted
    check_adamw(trainer.optimizers[0], module)


def test_configured_betas_eps_and_decay_are_used(data_cache):
    module = tiny_module(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
    trainer = tiny_trainer(1)
    trainer.fit(module, datamodule=tiny_data(data_cache))
    check_adamw(trainer.optimizers[0], module, betas=(0.8, 0.99), eps=1e-6, decay=0.05)


def test_schedule_is_linear_warmup_then_cosine_to_a_tenth(fitted):
    trainer, _, _, rec = fitted
    assert len(rec.lrs) == TOTAL
    for lrs in rec.lrs:
        assert len(set(lrs)) == 1  # every group at the same LR
    used = [lrs[0] for lrs in rec.lrs] + [trainer.optimizers[0].param_groups[0]["lr"]]  # + after the last update
    warmup = 6
    # The anchors, by hand: first update, end of warmup, middle of the cosine, end of training.
    assert used[0] == pytest.approx(PEAK / warmup, rel=1e-9)
    assert used[warmup - 1] == pytest.approx(PEAK, rel=1e-9) and used[warmup - 2] < PEAK
    assert PEAK * 0.99 < used[warmup] < PEAK  # the cosine starts from the peak
    assert used[warmup - 1 + (TOTAL - warmup) // 2] == pytest.approx(0.55 * PEAK, rel=1e-9)
    assert used[TOTAL - 1] == pytest.approx(0.1 * PEAK, rel=1e-9)  # the last update runs at the floor
    assert used[TOTAL] == pytest.approx(0.1 * PEAK, rel=1e-9)
    for k, lr in enumerate(used):
        assert lr == pytest.approx(PEAK * reference_multiplier(k, TOTAL, warmup), rel=1e-9), k


def test_gradients_clipped_to_the_trainers_value(fitted):
    _, _, _, rec = fitted
    assert len(rec.raw_norms) == len(rec.clipped_norms) == TOTAL
    assert sum(raw > CLIP for raw in rec.raw_norms) >= TOTAL // 2  # the clip is exercised
    for raw, clipped in zip(rec.raw_norms, rec.clipped_norms):
        assert clipped == pytest.approx(min(raw, CLIP), rel=1e-4)


def test_unclipped_without_a_clip_value(data_cache):
    rec = RecipeRecorder()
    tiny_trainer(3, [rec], clip=None).fit(tiny_module(), datamodule=tiny_data(data_cache))
    assert rec.raw_norms and max(rec.raw_norms) > CLIP
    assert rec.clipped_norms == pytest.approx(rec.raw_norms, rel=1e-6)


def test_training_loss_is_transformers_labels_loss(fitted):
    _, _, _, rec = fitted
    assert len(rec.losses) == len(rec.reference_losses) == TOTAL
    assert rec.losses == pytest.approx(rec.reference_losses, rel=1e-5, abs=1e-6)
    assert rec.losses[-1] < rec.losses[0] - 0.5  # and it trains


def test_validation_loss_is_transformers_labels_loss(fitted):
    _, module, data, _ = fitted
    validator = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False)
    metrics = validator.validate(module, datamodule=data, verbose=False)[0]
    tokens = torch.cat(list(data.val_dataloader()))
    with torch.no_grad():
        reference = float(module.model(input_ids=tokens, labels=tokens).loss)
    assert metrics["val_loss"] == pytest.approx(reference, rel=1e-5)
    assert metrics["val_ppl"] == pytest.approx(math.exp(reference), rel=1e-5)


# ----------------------------------------------------------------------------------------- the schedule alone
@settings(max_examples=200, deadline=None)
@given(total=st.integers(2, 5000), warmup_share=st.floats(0, 0.5), floor=st.floats(0, 1), data=st.data())
def test_lr_multiplier_closed_form_and_shape(total, warmup_share, floor, data):
    warmup = int(warmup_share * total)
    u = data.draw(st.integers(1, total))  # update u, 1-based
    value = lr_multiplier(u, total, warmup, floor)
    assert value == pytest.approx(reference_multiplier(u - 1, total, warmup, floor), rel=1e-12, abs=1e-12)
    assert (0 if u <= warmup else floor) - 1e-12 <= value <= 1 + 1e-12  # in (0, 1] in warmup, [floor, 1] after
    nxt = lr_multiplier(u + 1, total, warmup, floor) if u < total else value
    if u < warmup:
        assert nxt > value  # rising during warmup
    elif u >= warmup:
        assert nxt <= value + 1e-15  # never rising after it
    assert lr_multiplier(total, total, warmup, floor) == pytest.approx(floor, abs=1e-12)
    if warmup:
        assert lr_multiplier(warmup, total, warmup, floor) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------- every Pythia config
def resolved_config(size: str) -> dict:
    """The config as the real CLI resolves it (``--print_config``)."""
    from lmdynamics.commands.fit import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / f"pythia-{size}.yaml"), "--print_config"])
    return yaml.safe_load(out.getvalue())


def scheduled_multiplier(scheduler, base_lr: float, k: int) -> float:
    """The scheduler's LR at step k over the base LR (LambdaLR-style closed form: jump to k)."""
    scheduler.last_epoch = k - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": on purpose here
        scheduler.step()
    return scheduler.optimizer.param_groups[0]["lr"] / base_lr


@pytest.mark.parametrize("size", list(PUBLISHED_PEAK_LR))
def test_every_pythia_config_resolves_to_the_published_optimiser(size):
    cfg = resolved_config(size)
    assert cfg["trainer"]["gradient_clip_val"] == 1.0
    total = cfg["trainer"]["max_steps"]
    assert total == 143000
    module = LMModule(model=ModelSpec(**cfg["model"]["model"]), optim=OptimSpec(**cfg["model"]["optim"]))
    module.trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=total, logger=False,
                               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
        module.configure_model()
    out = module.configure_optimizers()
    optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert out["lr_scheduler"].get("interval") == "step"
    check_adamw(optimizer, module)
    peak = PUBLISHED_PEAK_LR[size]
    assert scheduler.base_lrs == pytest.approx([peak] * len(optimizer.param_groups), rel=1e-12)
    warmup = 1430  # 1% of 143,000 steps
    assert scheduled_multiplier(scheduler, peak, total - 1) == pytest.approx(0.1, rel=1e-9)  # the last update
    for k in (0, 1, warmup - 1, warmup, warmup + (total - warmup) // 2, total - 1, total):
        assert scheduled_multiplier(scheduler, peak, k) == pytest.approx(reference_multiplier(k, total, warmup),
                                                                          rel=1e-9), k


def test_schedule_edges():
    assert lr_multiplier(1, 10, 1, 0.1) == pytest.approx(1.0)  # one warmup step: the first update at the peak
    assert lr_multiplier(2, 2, 1, 0.1) == pytest.approx(0.1)  # a one-step cosine: its update runs at the floor
    assert lr_multiplier(1, 2, 1, 0.1) == pytest.approx(1.0)
    for beyond in (11, 15, 30):  # past the end of training the rate stays at the floor
        assert lr_multiplier(beyond, 10, 2, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("size, peak", [("160m", 6e-4), ("1.4b", 2e-4), (None, 1e-3)])
def test_lr_left_empty_takes_the_published_peak(size, peak):
    spec = ModelSpec(size=size) if size else ModelSpec(num_layers=2, hidden_size=16, num_heads=2, vocab_size=64)
    module = LMModule(model=spec, optim=OptimSpec(lr=None))
    module.trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=100, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
        module.configure_model()
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.base_lrs[0] == pytest.approx(peak, rel=1e-12)


# ------------------------------------------------------------------- the head's own groups, the schedule line
# (head_lr_multiplier, head_weight_decay, whether the head gets groups of its own); the body's decay is 0.1
HEAD_SETTINGS = [(1.0, None, False), (3.0, None, True), (1.0, 0.3, True), (1.0, 0.1, False), (0.5, 0.0, True),
                 (2.0, 0.1, True)]


@pytest.fixture
def one_step(data_cache):
    module = tiny_module()
    trainer = tiny_trainer(1)
    trainer.fit(module, datamodule=tiny_data(data_cache))
    return trainer, module


def test_the_head_gets_its_lr_and_decay_in_groups_of_its_own(one_step):
    """Every parameter's LR, weight decay and group name follow from where it sits (head or body, matrix or
    vector) and the head settings, for each kind of setting; the head has groups of its own only when a
    setting differs from the body's, and no group is empty."""
    from dataclasses import replace

    _, module = one_step
    head = {id(p) for p in module.model.get_output_embeddings().parameters()}
    body_decay = module.optim.weight_decay
    for multiplier, head_decay, separate in HEAD_SETTINGS:
        module.optim = replace(module.optim, head_lr_multiplier=multiplier, head_weight_decay=head_decay)
        optimizer = module.configure_optimizers()["optimizer"]
        assert all(g["params"] for g in optimizer.param_groups), (multiplier, head_decay)
        names = [g["name"] for g in optimizer.param_groups]
        assert len(names) == len(set(names)) and any(n.startswith("head") for n in names) == separate
        for name, p in module.model.named_parameters():
            own = separate and id(p) in head
            matrix = p.ndim >= 2
            g = group_of(optimizer)[id(p)]
            assert g["name"] == f"{'head' if own else 'body'}_{'decay' if matrix else 'no_decay'}", name
            assert g["initial_lr"] == pytest.approx(PEAK * (multiplier if own else 1.0), rel=1e-12), name
            expected = (head_decay if own and head_decay is not None else body_decay) if matrix else 0.0
            assert g["weight_decay"] == pytest.approx(expected, abs=1e-15), (name, multiplier, head_decay)


def test_fused_adamw_is_asked_for_only_when_set(one_step):
    from dataclasses import replace

    _, module = one_step
    for fused, expected in ((True, True), (False, None)):  # None: torch picks, as without the switch
        module.speed = replace(module.speed, fused_adamw=fused)
        assert module.configure_optimizers()["optimizer"].defaults["fused"] is expected


def test_the_schedule_line_is_printed_once_per_fit_on_rank_zero(one_step, capsys, monkeypatch):
    """The line names the peak, the warmup updates and, when warmup_fraction x steps is not whole, the exact
    product it was rounded from; nothing under validate or on another rank."""
    from lightning.pytorch.trainer.states import TrainerFn

    trainer, module = one_step
    capsys.readouterr()
    for steps, warmup, rounded in ((60, 6, False), (61, 6, True), (75, 8, True)):
        trainer.fit_loop.epoch_loop.max_steps = steps
        module.configure_optimizers()
        line = capsys.readouterr().out.strip()
        exact = WARMUP_FRACTION * steps
        assert line.startswith(f"[lmdynamics] lr schedule: peak {PEAK:g}, linear warmup over {warmup} update(s)")
        assert line.endswith(f"cosine to 0.1 x peak at update {steps}")
        assert (f"({WARMUP_FRACTION:g} of {steps} steps = {exact:g}, rounded)" in line) == rounded, line
        assert ("rounded" in line) == rounded
        assert (f"linear warmup over {warmup} update(s), cosine to" in line) == (not rounded), line  # no note at all
    trainer.state.fn = TrainerFn.VALIDATING
    module.configure_optimizers()
    assert capsys.readouterr().out == ""
    trainer.state.fn = TrainerFn.FITTING
    monkeypatch.setattr(L.Trainer, "global_rank", property(lambda self: 1))
    module.configure_optimizers()
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------- the values written to the loggers
class RowsLogger(Logger):
    """Every ``log_metrics`` call, by step (what the tidy table, CSV and TensorBoard loggers receive)."""

    name, version = "rows", 0

    def __init__(self):
        super().__init__()
        self.rows: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, step=None):
        self.rows.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class UpdateClock(L.Callback):
    """Wall time of each update, from its first micro-batch's start to its last one's end."""

    def __init__(self):
        self.seconds, self._start = {}, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % trainer.accumulate_grad_batches == 0:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self.seconds[trainer.global_step] = time.perf_counter() - self._start


@pytest.mark.parametrize("clip_algorithm", [None, "norm"])
def test_logged_step_values_in_process(data_cache, clip_algorithm):
    """With accumulation over 3 micro-batches, logging every 2nd update and a 5-update run: rows at updates 2, 4
    and the last (5) only, each the quantity its name says: train_loss the mean labels= loss over the update's
    micro-batches, lr the rate the update used, grad_norm the norm before clipping (the clip algorithm left to
    Lightning's default or named), tokens the tokens of updates 1..k, tokens_per_sec those of one update over
    its wall time, model_tflops and mfu from it and the FLOPs per token against the given peak."""
    from lmdynamics.training.speed import SpeedSpec

    L.seed_everything(5)
    module = LMModule(model=ModelSpec(num_layers=2, hidden_size=16, num_heads=2),
                      optim=OptimSpec(lr=PEAK, warmup_fraction=0.4), speed=SpeedSpec(peak_tflops=0.5))
    rec, clock, logger = RecipeRecorder(), UpdateClock(), RowsLogger()
    trainer = tiny_trainer(5, [rec, clock], accumulate_grad_batches=3, log_every_n_steps=2,
                           gradient_clip_algorithm=clip_algorithm, logger=logger)
    trainer.fit(module, datamodule=tiny_data(data_cache))
    steps = sorted(k for k, row in logger.rows.items() if "train_loss" in row)
    assert steps == [2, 4, 5]
    assert len(rec.reference_losses) == 15 and len(rec.raw_norms) == len(rec.lrs) == 5
    for k in steps:
        row = logger.rows[k]
        assert set(row) >= {"train_loss", "grad_norm", "lr", "tokens", "tokens_per_sec", "model_tflops", "mfu",
                            "measure_share"}, row
        micro = rec.reference_losses[3 * (k - 1):3 * k]  # equal token counts: the mean is the token-weighted one
        assert row["train_loss"] == pytest.approx(sum(micro) / 3, rel=1e-5), k
        assert row["lr"] == pytest.approx(rec.lrs[k - 1][0], rel=1e-12), k
        assert row["grad_norm"] == pytest.approx(rec.raw_norms[k - 1], rel=1e-4), k
        assert row["tokens"] == k * 3 * 4 * 16
        # the module times the update from inside the same hooks: the same interval up to the hooks' own cost
        assert 0.5 < row["tokens_per_sec"] * clock.seconds[k] / (3 * 4 * 16) < 2.0, (k, row["tokens_per_sec"])
        assert row["model_tflops"] == pytest.approx(row["tokens_per_sec"] * module.flops_per_token / 1e12, rel=1e-9)
        assert row["mfu"] == pytest.approx(row["model_tflops"] / 0.5, rel=1e-9)
        assert 0.0 <= row["measure_share"] < 1.0
    assert max(rec.raw_norms) > CLIP  # the clipped norm is not what grad_norm reports
    # the progress bar shows the last update's loss and speed; they reach no logger (only the rows above do)
    bar = trainer.progress_bar_metrics
    assert float(bar["train_loss"]) == pytest.approx(logger.rows[5]["train_loss"], rel=1e-6)
    assert float(bar["tok/s"]) == pytest.approx(logger.rows[5]["tokens_per_sec"], rel=1e-6)
    assert not any(name in row for row in logger.rows.values() for name in ("tok/s", "train_loss_step", "epoch"))


def test_clipping_by_value_goes_to_lightning(data_cache):
    """gradient_clip_algorithm: value clips each gradient entry (Lightning's own clipping), not the norm; grad_norm is
    still the norm before clipping."""
    seen = []

    class MaxGrad(L.Callback):
        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(  # the gradients the update used, clipped
                lambda opt, args, kwargs: seen.append(max(float(p.grad.abs().max()) for g in opt.param_groups
                                                          for p in g["params"] if p.grad is not None)))

    rec, logger = RecipeRecorder(), RowsLogger()
    trainer = tiny_trainer(3, [rec, MaxGrad()], clip=1e-3, gradient_clip_algorithm="value", log_every_n_steps=1,
                           logger=logger)
    trainer.fit(tiny_module(), datamodule=tiny_data(data_cache))
    assert len(seen) == 3 and max(seen) == pytest.approx(1e-3, rel=1e-6)  # entries clipped to the value
    assert min(rec.raw_norms) > 10 * 1e-3  # and they were larger before
    # grad_norm is still the global norm before clipping (README), not a placeholder
    assert [logger.rows[k]["grad_norm"] for k in (1, 2, 3)] == pytest.approx(rec.raw_norms, rel=1e-4)


class ValidationReference(L.Callback):
    """transformers' labels= loss over every validation block at the weights each validation sees (not the
    sanity check's), by update."""

    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_validation_start(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        blocks = torch.cat(list(trainer.datamodule.val_dataloader()))
        with torch.no_grad():
            self.losses[trainer.global_step] = float(pl_module.model(input_ids=blocks, labels=blocks).loss)


def test_validation_rows_in_process(data_cache):
    """Validation during fit writes val_loss (the token-weighted mean labels= loss over the validation blocks)
    and val_ppl = exp(val_loss) at the update it follows; the sanity check writes nothing."""
    ref, logger = ValidationReference(), RowsLogger()
    trainer = tiny_trainer(4, [ref], clip=None, val_check_interval=2, check_val_every_n_epoch=None,
                           limit_val_batches=None, num_sanity_val_steps=1, logger=logger)
    trainer.fit(tiny_module(), datamodule=tiny_data(data_cache))
    steps = sorted(k for k, row in logger.rows.items() if "val_loss" in row)
    assert steps == sorted(ref.losses) == [2, 4]
    for k in steps:
        row = logger.rows[k]
        assert row["val_loss"] == pytest.approx(ref.losses[k], rel=1e-5), k
        assert row["val_ppl"] == pytest.approx(math.exp(row["val_loss"]), rel=1e-6), k
        assert not any("excess" in name for name in row)  # no known optimum for a text corpus
    assert logger.rows[2]["val_loss"] != pytest.approx(logger.rows[4]["val_loss"], rel=1e-6)
    assert "val_loss" in trainer.progress_bar_metrics and "val_ppl" not in trainer.progress_bar_metrics


def test_excess_loss_over_the_synthetic_languages_floor_in_process(tmp_path):
    """On a language with a known optimum, validation also writes val_loss minus its exact entropy floor."""
    from lmdynamics.data.synthetic import SyntheticSpec
    from lmdynamics.training.module import EXCESS_LOSS

    data = TextDataModule(source="synthetic", context_length=16, batch_size=4, val_blocks=8,
                          synthetic=SyntheticSpec(vocab_size=64, rank=8, classes=4), cache_dir=str(tmp_path))
    logger = RowsLogger()
    trainer = tiny_trainer(2, clip=None, val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=None,
                           logger=logger)
    trainer.fit(LMModule(model=ModelSpec(num_layers=1, hidden_size=16, num_heads=2), optim=OptimSpec(lr=PEAK)),
                datamodule=data)
    row = logger.rows[2]
    floor = data.language.entropy_floor(16)
    assert 0 < floor < row["val_loss"]
    assert row[EXCESS_LOSS] == pytest.approx(row["val_loss"] - floor, rel=1e-5)


@pytest.mark.parametrize("saved", [[], ["checkpoints/step00000003"],
                                   ["checkpoints/step00000003", "checkpoints/step00000012", "lightning/last.ckpt"]])
def test_a_non_finite_loss_names_the_last_two_checkpoints_saved(data_cache, tmp_path, saved):
    """The error names the update that went non-finite and the newest two of the HF checkpoints (in step order)
    and the resume checkpoint, or that none was saved."""
    from lmdynamics.training.module import NonFiniteLossError

    root = tmp_path / "run"
    for name in saved:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).mkdir() if "step" in name else (root / name).write_text("")
    trainer = tiny_trainer(3, clip=None, default_root_dir=str(root))
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(tiny_module(lr=float("inf")), datamodule=tiny_data(data_cache))
    message = str(err.value)
    assert message.startswith("non-finite training loss (nan) at step 2; last good checkpoint: ")
    named = message.split("last good checkpoint: ", 1)[1]
    assert named == (", ".join(str(root / name) for name in saved[-2:]) if saved else "none saved yet")


def test_measure_share_is_the_measuring_callbacks_time_over_the_training_time(data_cache, tmp_path):
    """``measure_share`` at an update = seconds the measurement callbacks spent so far / seconds since training
    started, both read independently here (a callback that only sleeps, so the share is large and far from the
    products and sums a wrong formula would give)."""
    import time

    from lmdynamics.callbacks.base import MeasurementCallback

    class Sleeper(MeasurementCallback):
        def measure(self, trainer, pl_module, step):
            time.sleep(0.05)

    class Clock(L.Callback):  # after the sleeper: sees its time for the update the module is about to log
        def __init__(self, sleeper):
            self.sleeper, self.at = sleeper, {}

        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.at[trainer.global_step] = (self.sleeper.seconds, time.perf_counter() - self.start)

    sleeper = Sleeper(every=1)
    clock, logger = Clock(sleeper), RowsLogger()
    trainer = tiny_trainer(4, [sleeper, clock], clip=None, log_every_n_steps=1, logger=logger,
                           default_root_dir=str(tmp_path / "run"))
    trainer.fit(tiny_module(), datamodule=tiny_data(data_cache))
    for step in (2, 3, 4):
        seconds, elapsed = clock.at[step]
        assert seconds >= 0.05 * step  # the design: sleeps dominate, the whole well under a second
        assert logger.rows[step]["measure_share"] == pytest.approx(seconds / elapsed, rel=0.15), step


@pytest.mark.parametrize("tied", [False, True])
def test_the_model_line_and_flops_per_token_of_the_model_built(data_cache, capsys, tied):
    """configure_model prints the architecture line on rank 0 and takes FLOPs per token from the model it built
    (a tied head counts once: 6 N with N without the input embedding is one matrix fewer than untied)."""
    from lmdynamics.models.sizes import matmul_parameters
    from lmdynamics.models.zoo import count_parameters
    from lmdynamics.training.module import describe_model

    module = LMModule(model=ModelSpec(num_layers=2, hidden_size=16, num_heads=2, tie_embeddings=tied),
                      optim=OptimSpec(lr=PEAK))
    tiny_trainer(1).fit(module, datamodule=tiny_data(data_cache))
    s, n = module.spec.resolved(), count_parameters(module.model)
    assert f"[lmdynamics] {describe_model(module.spec, n)}\n" in capsys.readouterr().out
    attention = 12 * s.num_layers * s.hidden_size * s.context_length
    # N: every parameter but the input embedding's lookup; tied, the one V x d matrix is the head's matmul
    matmul = n if tied else n - s.vocab_size * s.hidden_size
    assert module.flops_per_token == 6 * matmul + attention
    assert matmul_parameters(n, s.vocab_size, s.hidden_size, tied) == matmul


def test_a_named_size_with_an_override_builds(capsys):
    """pythia-14m with a changed field is not held to pythia-14m's published parameter count."""
    module = LMModule(model=ModelSpec(size="14m", num_layers=2), optim=OptimSpec(lr=PEAK))
    module.configure_model()
    assert "pythia-14m with num_layers=2 (published 6)" in capsys.readouterr().out


# ------------------------------------------------------------------- the printed model line, without a fit
# Counts by hand from L(12d^2 + 13d) + 2Vd + 2d: pythia-14m (L 6, d 128, V 50304) 14,067,712; L 2, d 16, V 64: 8,640;
# pythia-14m at L 2, d 64: 6,539,008; pythia-14m with a rank-8 head: 14,067,712 - 128 V + 8 V + 8 x 128 = 8,032,256.
ARCH_14M = "6 layers, d_model 128, 4 heads, vocab 50304, context 2048, rotary 0.25, parallel residual"
ARCH_SMALL = "2 layers, d_model 16, 2 heads, vocab 64, context 16, rotary 0.25, parallel residual"


@pytest.mark.parametrize("spec, parameters, line", [
    (ModelSpec(size="14m"), 14_067_712,
     f"model pythia-14m: {ARCH_14M}, untied plain head: 14,067,712 parameters = published pythia-14m count"),
    (ModelSpec(num_layers=2, hidden_size=16, num_heads=2, vocab_size=64, context_length=16), 8_640,
     f"model neox-L2-d16-h2: {ARCH_SMALL}, untied plain head: 8,640 parameters = L(12d^2+13d)+2Vd+2d"),
    (ModelSpec(num_layers=2, hidden_size=16, num_heads=2, vocab_size=64, context_length=16), 8_704,
     f"model neox-L2-d16-h2: {ARCH_SMALL}, untied plain head: 8,704 parameters (formula L(12d^2+13d)+2Vd+2d gives 8,640)"),
    (ModelSpec(size="14m", num_layers=2, hidden_size=64), 6_539_008,
     "model pythia-14m with num_layers=2 (published 6), hidden_size=64 (published 128): 2 layers, d_model 64, 4 heads, "
     "vocab 50304, context 2048, rotary 0.25, parallel residual, untied plain head: 6,539,008 parameters "
     "= L(12d^2+13d)+2Vd+2d"),
    (ModelSpec(size="14m", head={"kind": "low_rank", "rank": 8}), 8_032_256,
     f"model pythia-14m+low_rank8: {ARCH_14M}, untied low_rank8 head: 8,032,256 parameters "
     "(formula L(12d^2+13d)+2Vd+2d gives 14,067,712)"),
], ids=["published-size", "custom-formula", "custom-off-formula", "size-with-overrides", "size-with-low-rank-head"])
def test_the_model_line_names_the_architecture_and_checks_its_count(spec, parameters, line):
    """The start-of-run line, exactly: the model's name (a named size's overrides each with its published value),
    the architecture, and the count checked against the published count of a size as published, against the
    formula otherwise (its value shown when they differ)."""
    from lmdynamics.training.module import describe_model

    assert describe_model(spec, parameters) == line


def test_a_named_size_with_another_head_builds_and_a_wrong_build_of_a_size_is_refused(monkeypatch, capsys):
    """A head switch on a named size changes the count on purpose (it is in the model's name), so it is not
    held to the size's published count; a plain named size whose built count is not the published one is an
    error (here the MLP built 3d wide instead of 4d: 6 x (2 x 128 x 128 + 128) = 197,376 parameters short)."""
    import lmdynamics.training.module as module_code

    low_rank = LMModule(model=ModelSpec(size="14m", head={"kind": "low_rank", "rank": 8}))
    with torch.device("meta"):
        low_rank.configure_model()
    assert "8,032,256 parameters (formula L(12d^2+13d)+2Vd+2d gives 14,067,712)" in capsys.readouterr().out
    build = module_code.build_causal_lm

    def narrow_mlp(hf_config, head):
        hf_config.intermediate_size = 3 * hf_config.hidden_size
        return build(hf_config, head)

    monkeypatch.setattr(module_code, "build_causal_lm", narrow_mlp)
    with torch.device("meta"), pytest.raises(RuntimeError, match=r"built 13,870,336 parameters for pythia-14m, "
                                                                 r"but it has 14,067,712: the architecture is wrong"):
        LMModule(model=ModelSpec(size="14m")).configure_model()


# ------------------------------------------------------------------- optimiser settings against the published ones
def test_the_optimiser_overrides_name_what_differs_from_the_published_recipe():
    """lr left empty takes the size's published peak; a field given as the published value (betas as the list a
    YAML config gives) is no override; each override keeps the published value beside it; without a size
    there is no published recipe and lr defaults to 1e-3."""
    from lmdynamics.training.module import ResolvedOptim, resolve_optim

    assert resolve_optim(OptimSpec(), "160m") == ResolvedOptim(6e-4, {}, {})
    assert resolve_optim(OptimSpec(lr=6e-4, betas=[0.9, 0.95]), "160m") == ResolvedOptim(6e-4, {}, {})
    changed = OptimSpec(lr=1e-3, betas=[0.9, 0.99], weight_decay=0.0, warmup_fraction=0.02)
    assert resolve_optim(changed, "160m") == ResolvedOptim(
        1e-3, {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.0, "warmup_fraction": 0.02},
        {"lr": 6e-4, "betas": (0.9, 0.95), "weight_decay": 0.1, "warmup_fraction": 0.01})
    assert resolve_optim(OptimSpec(), None) == ResolvedOptim(1e-3, {}, {})
    assert resolve_optim(OptimSpec(lr=2e-3, weight_decay=0.0), None) == ResolvedOptim(2e-3, {}, {})


def test_warmup_updates_from_the_fraction():
    """round(fraction x steps), none for a zero fraction, at least one for a positive one, never more than the run."""
    from lmdynamics.training.module import warmup_steps

    assert warmup_steps(0.0, 100) == 0
    assert warmup_steps(0.01, 143_000) == 1430
    assert warmup_steps(0.001, 100) == 1 and warmup_steps(0.004, 100) == 1  # 0.1 and 0.4 updates: one
    assert warmup_steps(0.015, 100) == 2
    assert warmup_steps(1.0, 5) == 5 and warmup_steps(3.0, 5) == 5



def test_tokens_in_one_update_count_every_micro_batch_of_every_rank():
    """One optimizer step consumes micro-batch x context x accumulated micro-batches x data-parallel ranks tokens
    (the ``tokens`` axis of every table): each factor scales it, the world size included."""
    from types import SimpleNamespace

    from lmdynamics.training.module import step_tokens

    data = SimpleNamespace(batch_size=3, context_length=32)
    for accumulate in (1, 4):
        for world in (1, 2, 8):
            trainer = SimpleNamespace(accumulate_grad_batches=accumulate, world_size=world)
            assert step_tokens(data, trainer) == 3 * 32 * accumulate * world

def test_the_schedule_of_a_one_update_run():
    """What run.json and the dry run show as the schedule: every field, for a run of one update."""
    module = tiny_module()
    module.trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
    assert module.schedule_description() == {"peak_lr": PEAK, "max_steps": 1, "warmup_steps": 1,
                                             "warmup_fraction": WARMUP_FRACTION, "min_lr_ratio": 0.1}


# ------------------------------------------------------------------- the module's arguments
def test_a_non_positive_head_lr_multiplier_is_refused():
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"model.optim.head_lr_multiplier must be positive, got {bad}"):
            LMModule(optim=OptimSpec(head_lr_multiplier=bad))


def test_the_hyperparameters_are_the_three_specs_by_argument_name():
    """A checkpoint's hyper_parameters (Lightning's copy of ``hparams``) hold the model, optim and speed specs as
    dicts under LMModule's argument names, which is how the CLI reads a checkpoint's settings back (each
    dict is the argument's value); building from them gives the same specs."""
    import inspect
    from dataclasses import asdict

    from lmdynamics.training.speed import SpeedSpec

    spec = ModelSpec(size="14m", num_layers=2, head={"kind": "low_rank", "rank": 8})
    optim, speed = OptimSpec(lr=PEAK, head_lr_multiplier=2.0), SpeedSpec(compile=True, peak_tflops=3.0)
    module = LMModule(model=spec, optim=optim, speed=speed)
    saved = dict(module.hparams)
    assert saved == {"model": asdict(spec), "optim": asdict(optim), "speed": asdict(speed)}
    assert list(saved) == list(inspect.signature(LMModule).parameters)
    again = LMModule(model=ModelSpec(**saved["model"]), optim=OptimSpec(**saved["optim"]),
                     speed=SpeedSpec(**saved["speed"]))
    assert asdict(again.spec.resolved()) == asdict(spec.resolved())
    assert (again.optim, again.speed) == (optim, speed)


class FakeData:
    """What resolve_spec reads of a data module: prepare(), the tokenizer's vocabulary, the context length."""

    def __init__(self, vocab_size: int, context_length: int = 32):
        self.vocab_size, self.context_length, self.prepared = vocab_size, context_length, False

    def prepare(self):
        self.prepared = True


def test_the_vocabulary_and_context_follow_the_data():
    """Without a size or a vocabulary, the tokenizer's rounded up to a multiple of 128 (GPT-NeoX's 50277 ids:
    Pythia's 50304); a named size keeps its own; a given one is kept when it holds every id, equal included,
    and refused when it is smaller. The context length is always the data's."""
    custom = dict(num_layers=2, hidden_size=16, num_heads=2)
    data = FakeData(50277)
    spec = LMModule(model=ModelSpec(**custom)).resolve_spec(data)
    assert data.prepared and (spec.vocab_size, spec.context_length) == (50304, 32)
    assert LMModule(model=ModelSpec(**custom)).resolve_spec(FakeData(300)).vocab_size == 384
    named = LMModule(model=ModelSpec(size="14m")).resolve_spec(FakeData(300, 64))
    assert (named.vocab_size, named.context_length, named.overrides()) == (50304, 64, {})
    assert LMModule(model=ModelSpec(**custom, vocab_size=1024)).resolve_spec(FakeData(300)).vocab_size == 1024
    assert LMModule(model=ModelSpec(**custom, vocab_size=300)).resolve_spec(FakeData(300)).vocab_size == 300
    with pytest.raises(ValueError, match="model vocabulary 299 is smaller than the tokenizer's 300 ids"):
        LMModule(model=ModelSpec(**custom, vocab_size=299)).resolve_spec(FakeData(300))


def test_calling_the_module_gives_the_models_logits():
    module = LMModule(model=ModelSpec(num_layers=1, hidden_size=16, num_heads=2, vocab_size=64, context_length=8))
    with contextlib.redirect_stdout(io.StringIO()):
        module.configure_model()
    tokens = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = module(tokens)
        assert logits.shape == (3, 8, 64)
        assert torch.equal(logits, module.model(input_ids=tokens).logits)


# ------------------------------------------------------------------- losses summed in float64
class MicroLosses(L.Callback):
    """The loss of every training micro-batch and of every validation batch with its row count, by the module's
    own loss at the weights the step sees."""

    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with torch.no_grad():
            self.train.append(float(pl_module.lm_loss(batch)))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            with torch.no_grad():
                self.val.append((float(pl_module.lm_loss(batch)), batch.size(0)))


def test_logged_losses_are_the_float64_weighted_means(data_cache, tmp_path):
    """train_loss is the mean of the update's micro-batch losses and val_loss the row-weighted mean of the
    validation batches' losses, both summed in float64 (val_loss then in float32): the exact means, not float32
    running sums (whose rounding a long accumulation or validation would grow)."""
    data = TextDataModule(source="python-docs", tokenizer="bpe:300", context_length=16, batch_size=3,
                          max_documents=60, val_blocks=12, cache_dir=str(data_cache))
    L.seed_everything(7)
    seen, logger = MicroLosses(), RowsLogger()
    trainer = tiny_trainer(4, [seen], clip=None, accumulate_grad_batches=3, log_every_n_steps=1, logger=logger,
                           val_check_interval=12, check_val_every_n_epoch=None, limit_val_batches=None)
    trainer.fit(tiny_module(), datamodule=data)
    assert len(seen.train) == 12 and len(seen.val) == 4
    for k in (1, 2, 3, 4):
        micro = seen.train[3 * (k - 1):3 * k]
        assert logger.rows[k]["train_loss"] == pytest.approx(sum(micro) / 3, rel=1e-13, abs=0), k
    expected = sum(loss * rows for loss, rows in seen.val) / sum(rows for _, rows in seen.val)
    assert logger.rows[4]["val_loss"] == float(torch.tensor(expected, dtype=torch.float64).float())


@pytest.mark.parametrize("reported", [1.25, None])
def test_a_norm_measured_by_the_engine_is_the_one_logged(data_cache, reported):
    """Under DeepSpeed the engine (the strategy's model) clips and measures the norm itself: grad_norm is the
    norm its get_global_grad_norm reports, and NaN when it reports none (ZeRO's norm computation off), training
    going on either way. An engine stand-in: the strategy's model here is the module itself."""
    logger, module = RowsLogger(), tiny_module()
    module.get_global_grad_norm = lambda: reported
    tiny_trainer(2, log_every_n_steps=1, logger=logger).fit(module, datamodule=tiny_data(data_cache))
    for k in (1, 2):
        value = logger.rows[k]["grad_norm"]
        assert value == reported if reported is not None else math.isnan(value), (k, value)
