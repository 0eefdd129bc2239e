"""When the resume checkpoint is taken and what it leaves, in a real (tiny, in-process) Lightning fit: every
``every`` optimizer steps and at the last step, only at the end of a step's last micro-batch, as the one file
``last.ckpt`` holding its own step (no top-k or versioned copies, also when a run writes over an older one), with
the log positions of each committed step; the end-to-end kill tests are tests/test_resume.py (slow)."""

import os
import signal

import lightning.pytorch as pl
import pytest
import torch

from lmdynamics.training.resume import (POSITIONS_FILE, STOP, ResumeCheckpoint, StopOnSignal, load_positions,
                                       read_checkpoint_state)
from lmdynamics.training.run_status import RUNNING_FILE


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(64, 2), batch_size=2)


class Logger(pl.loggers.Logger):
    """A logger as the run's tidy-table logger is to the checkpoint: a position to record."""
    name, version = "table", 0

    def __init__(self):
        super().__init__()
        self.batches = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def checkpoint_state(self):
        return {"batches": self.batches}


class Watch(pl.Callback):
    """The committed checkpoint's step after every batch, and whether the run is marked running meanwhile."""

    def __init__(self, ckpt: ResumeCheckpoint, logger: Logger):
        self.ckpt, self.logger, self.seen, self.running = ckpt, logger, [], set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logger.batches += 1
        self.running.add((self.ckpt.path.parent / RUNNING_FILE).exists())
        if self.ckpt.path.exists():
            self.seen.append(read_checkpoint_state(self.ckpt.path)["step"])


def _fit(tmp_path, max_steps, every, accumulate=1, ckpt_path=None):
    ckpt, logger = ResumeCheckpoint(tmp_path / "lightning", every=every), Logger()
    watch = Watch(ckpt, logger)
    trainer = pl.Trainer(max_steps=max_steps, accumulate_grad_batches=accumulate, callbacks=[watch, ckpt],
                         logger=logger, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), ckpt_path=ckpt_path)
    return ckpt, watch


@pytest.mark.parametrize("max_steps, every, accumulate", [(7, 3, 1), (5, 2, 3)])
def test_the_checkpoint_is_committed_every_few_steps_and_at_the_last_one(tmp_path, max_steps, every, accumulate):
    ckpt, watch = _fit(tmp_path, max_steps, every, accumulate)
    committed = sorted(set(watch.seen))
    expected = sorted({s for s in range(1, max_steps + 1) if s % every == 0} | {max_steps})
    assert committed[: len(expected) - 1] == expected[:-1]  # the last is committed when training ends
    assert read_checkpoint_state(ckpt.path)["step"] == max_steps
    positions = load_positions(ckpt.path.parent)
    assert sorted(map(int, positions)) == expected[-4:]
    # the position recorded under a step is where the logs stood once that step (all its micro-batches) was done
    assert all(positions[str(s)] == {"table": {"batches": s * accumulate}} for s in expected[-4:])
    assert sorted(p.name for p in ckpt.path.parent.iterdir()) == ["last.ckpt", POSITIONS_FILE]
    assert watch.running == {True}  # marked running during training, unmarked at its end


def test_a_run_resumed_over_its_checkpoint_leaves_one_checkpoint_of_the_last_step(tmp_path):
    first, _ = _fit(tmp_path, 4, 2)
    second, watch = _fit(tmp_path, 9, 2, ckpt_path=str(first.path))
    assert sorted(set(watch.seen)) == [4, 6, 8]  # the step it resumed from first, then the new ones
    assert read_checkpoint_state(second.path)["step"] == 9
    assert sorted(p.name for p in second.path.parent.iterdir()) == ["last.ckpt", POSITIONS_FILE]


def test_a_signal_asks_for_a_stop_and_a_second_one_stops_at_once():
    previous = signal.getsignal(signal.SIGTERM)
    handler = StopOnSignal()
    handler.install()
    try:
        assert handler.requested is None and STOP["requested"] is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert handler.requested == signal.SIGTERM and STOP["requested"] == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is previous  # the previous handlers are back
    finally:
        handler.restore()
        STOP["requested"] = None
    handler.install()  # installed again (a second fit in the process): the earlier request is forgotten
    try:
        assert handler.requested is None and signal.getsignal(signal.SIGINT) == handler._handle
    finally:
        handler.restore()
    assert signal.getsignal(signal.SIGTERM) is previous
