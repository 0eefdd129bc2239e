"""When the resume checkpoint is taken and what it leaves, in a real (tiny, in-process) Lightning fit: every
``every`` optimizer steps and at the last step, only at the end of a step's last micro-batch, as the one file
``last.ckpt`` holding its own step (no top-k or versioned copies, also when a run writes over an older one), with
the log positions of each committed step; the end-to-end kill tests are tests/test_resume.py (slow)."""

import os
from pathlib import Path
import shlex
import shutil
import signal
import threading
from types import SimpleNamespace
import warnings

import lightning.pytorch as pl
import pytest
import torch

from lightning.pytorch.utilities.exceptions import SIGTERMException
from lmdynamics.training.resume import (INTERRUPTED, POSITIONS_FILE, STOP, ResumeCheckpoint, StopOnSignal, load_positions,
                                       read_checkpoint_state, resume_command, resume_hint)
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


@pytest.mark.parametrize("max_steps, every, accumulate", [(7, 3, 1), (5, 2, 3), (3, 1, 1)])
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
    received = []

    def previous(signum, frame):  # the handler before training (records instead of ending the test process)
        received.append(signum)

    before = signal.signal(signal.SIGTERM, previous)
    try:
        STOP["requested"] = signal.SIGINT  # left by an earlier fit in this process
        handler = StopOnSignal()
        handler.install()
        handler.install()  # installed twice: the handlers from before training are still the ones restored
        assert handler.requested is None and STOP["requested"] is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert handler.requested == signal.SIGTERM and STOP["requested"] == signal.SIGTERM and received == []
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is previous  # the previous handlers are back
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
        handler.install()  # installed again (a second fit in the process): the earlier request is forgotten
        assert handler.requested is None and signal.getsignal(signal.SIGINT) == handler._handle
        handler.restore()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)
        STOP["requested"] = None


def test_a_signal_during_training_stops_after_the_step_with_its_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    class Signal(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    ckpt = ResumeCheckpoint(tmp_path / "lightning", every=100)
    trainer = pl.Trainer(max_steps=20, callbacks=[Signal(), ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path))
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after KeyboardInterrupt
            trainer.fit(Tiny())
        assert trainer.global_step == 3 and read_checkpoint_state(ckpt.path)["step"] == 3
        assert INTERRUPTED["signal"] == signal.SIGTERM
        assert INTERRUPTED["hint"] == f"interrupted at step 3; resume from step 3 with: {resume_command(tmp_path)}"
        assert resume_command(tmp_path).endswith(f"--config {tmp_path.absolute() / 'config.yaml'} --ckpt_path last")
        assert f"[lmdynamics] {INTERRUPTED['hint']}" in capsys.readouterr().err
        assert not (tmp_path / "lightning" / RUNNING_FILE).exists()
    finally:
        INTERRUPTED.update(hint=None, signal=None)
        STOP["requested"] = None


def test_a_fit_outside_the_main_thread_runs_to_its_end(tmp_path):
    """No signal handlers can be installed there (a notebook's worker thread): training is not stopped."""
    out = {}
    worker = threading.Thread(target=lambda: out.update(zip(("ckpt", "watch"), _fit(tmp_path, 4, 2))))
    worker.start()
    worker.join()
    assert read_checkpoint_state(out["ckpt"].path)["step"] == 4


@pytest.mark.parametrize("unpickle_anything", [None, "1"])
def test_a_checkpoint_whose_pickle_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch, unpickle_anything):
    """Also where the environment tells torch to unpickle anything (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, set to read
    older checkpoints): torch obeys it only where the caller leaves weights_only out."""
    if unpickle_anything:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", unpickle_anything)
    marker = tmp_path / "ran"
    torch.save({"global_step": 5, "payload": RunsCode(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="is not a readable Lightning checkpoint"):
        read_checkpoint_state(tmp_path / "evil.ckpt")
    assert not marker.exists()


class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_load_error_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    torch.save({"global_step": 1}, tmp_path / "a.ckpt")

    def fails(*args, **kwargs):
        raise EOFError()

    monkeypatch.setattr(torch, "load", fails)
    with pytest.raises(ValueError, match=r"a.ckpt is not a readable Lightning checkpoint \(EOFError\)"):
        read_checkpoint_state(tmp_path / "a.ckpt")


def test_a_pending_directory_left_by_a_killed_save_is_replaced_whole(tmp_path):
    """DeepSpeed writes directories: a save killed half-way leaves a partial pending one; the next save starts clean."""
    from types import SimpleNamespace

    def save_checkpoint(path, weights_only=False):
        Path(path).mkdir()
        (Path(path) / "new_shard").write_text("new")

    ckpt = ResumeCheckpoint(tmp_path / "lightning", every=1)
    ckpt.pending.mkdir(parents=True)
    (ckpt.pending / "partial_shard").write_text("old")
    trainer = SimpleNamespace(is_global_zero=True, global_step=4, loggers=[], save_checkpoint=save_checkpoint)
    ckpt._save_checkpoint(trainer, str(ckpt.path))
    assert sorted(p.name for p in ckpt.pending.iterdir()) == ["new_shard"]


def test_the_resume_hint_names_the_step_saved_or_that_none_was_and_the_fit_command(tmp_path):
    command = resume_command(tmp_path)
    cd, _, args = command.partition(" && ")
    assert cd == f"cd {shlex.quote(os.getcwd())}"
    assert shlex.split(args)[-5:] == ["fit", "--config", str(tmp_path.absolute() / "config.yaml"), "--ckpt_path", "last"]
    assert resume_hint(tmp_path, 7, 5) == f"interrupted at step 7; resume from step 5 with: {command}"
    for saved in (None, 0):
        assert resume_hint(tmp_path, 3, saved) == (f"interrupted at step 3; resume from step 0 (no resume checkpoint yet) "
                                                   f"with: {command}")


@pytest.mark.parametrize("exception, requested, expected", [
    (KeyboardInterrupt(), None, signal.SIGINT),  # Ctrl-C while no stop handler is installed (before training starts)
    (SIGTERMException(), None, signal.SIGTERM),  # Lightning's own SIGTERM handler (before training starts)
    (KeyboardInterrupt(), signal.SIGTERM, signal.SIGTERM),  # the stop a SIGTERM requested
])
def test_the_signal_that_interrupted_the_run_is_recorded_for_its_exit_status(tmp_path, capsys, exception, requested,
                                                                            expected):
    """The CLI exits with 128 + this signal's number; no resume checkpoint was written yet here."""
    ckpt = ResumeCheckpoint(tmp_path / "lightning", every=10)
    ckpt._signals.requested = requested
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path), global_step=4)
    try:
        ckpt.on_exception(trainer, None, ValueError("not an interrupt"))
        assert INTERRUPTED == {"hint": None, "signal": None}
        ckpt.on_exception(trainer, None, exception)
        assert INTERRUPTED["signal"] == expected
        hint = f"interrupted at step 4; resume from step 0 (no resume checkpoint yet) with: {resume_command(tmp_path)}"
        assert INTERRUPTED["hint"] == hint and f"[lmdynamics] {hint}" in capsys.readouterr().err
    finally:
        INTERRUPTED.update(hint=None, signal=None)


def test_a_signal_in_the_middle_of_an_accumulation_window_stops_once_that_step_is_complete(tmp_path):
    class Signal(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 4:  # the second of step 2's three micro-batches
                os.kill(os.getpid(), signal.SIGTERM)

    ckpt = ResumeCheckpoint(tmp_path / "lightning", every=100)
    trainer = pl.Trainer(max_steps=20, accumulate_grad_batches=3, callbacks=[Signal(), ckpt], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=str(tmp_path))
    try:
        with pytest.raises(SystemExit):
            trainer.fit(Tiny())
        assert trainer.global_step == 2 and read_checkpoint_state(ckpt.path)["step"] == 2
        assert trainer.fit_loop.epoch_loop.batch_progress.current.completed == 6
    finally:
        INTERRUPTED.update(hint=None, signal=None)
        STOP["requested"] = None


def test_each_step_is_checkpointed_once_when_batches_end_without_an_optimizer_step(tmp_path):
    """Manual optimization stepping every other batch: the step stays the one just saved through the next batch."""
    class EveryOtherBatch(Tiny):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            self.manual_backward(super().training_step(batch, batch_idx))
            if batch_idx % 2:
                self.optimizers().step()
                self.optimizers().zero_grad()

    class Saves(pl.Callback):
        def __init__(self):
            self.steps = []

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            self.steps.append(trainer.global_step)

    ckpt, saves = ResumeCheckpoint(tmp_path / "lightning", every=1), Saves()
    trainer = pl.Trainer(max_steps=3, callbacks=[saves, ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path))
    trainer.fit(EveryOtherBatch())
    assert saves.steps == [1, 2, 3] and read_checkpoint_state(ckpt.path)["step"] == 3


def test_a_run_resumed_with_another_checkpoint_interval_is_not_warned_of_a_missing_callback_or_a_full_directory(
        tmp_path):
    """Its checkpoint directory holds the resume checkpoint it resumes from (no top-k copies that it could mix up)."""
    first, _ = _fit(tmp_path, 2, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, 4, 3, ckpt_path=str(first.path))
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "callbacks used to create the checkpoint" in m], messages
    assert not [m for m in messages if "exists and is not empty" in m], messages


def test_a_run_resumed_from_a_copy_of_its_directory_names_its_own_last_checkpoint(tmp_path):
    """Lightning restores the name of the last checkpoint only in the directory it was written in: in a copy the new
    run still names last.ckpt (what it writes), never a version-suffixed last-v1.ckpt beside the one it found."""
    _fit(tmp_path / "a", 2, 1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        ckpt, _ = _fit(tmp_path / "b", 3, 1, ckpt_path=str(tmp_path / "b" / "lightning" / "last.ckpt"))
    assert ckpt.last_model_path == str(ckpt.path)
    states = torch.load(ckpt.path, map_location="cpu", weights_only=True)["callbacks"]
    assert [state["last_model_path"] for state in states.values()] == [str(ckpt.path)]
    assert sorted(p.name for p in ckpt.path.parent.iterdir()) == ["last.ckpt", POSITIONS_FILE]
