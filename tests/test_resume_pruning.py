"""Resume bookkeeping over runs that write more resume checkpoints than ``log_positions.json`` keeps.

``ResumeCheckpoint`` records, under each committed checkpoint's step, where every log stood, and keeps the
last ``KEEP_POSITIONS`` steps. Steps are numbers: the kept ones are the latest by value at every step count,
across 9 -> 10, 99 -> 100 and 999 -> 1000, and the committed checkpoint's own step is always among them (a
resume reads it: ``read_checkpoint_state``). End to end, a run killed after its positions were first pruned and
after step 100 resumes exactly (the comparisons of ``tests/kill_resume.py``).
"""

import builtins
import errno
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from lmdynamics.training.resume import (KEEP_POSITIONS, POSITIONS_FILE, ResumeCheckpoint, _replace, checkpoint_step,
                                       load_positions, read_checkpoint_state)


class CountingLogger:
    name = "csv"

    def __init__(self):
        self.rows = 0

    def checkpoint_state(self) -> dict:
        return {"rows": self.rows}


def test_positions_kept_are_the_latest_steps_by_value_at_every_digit_count(tmp_path):
    callback = ResumeCheckpoint(tmp_path, every=1)
    logger = CountingLogger()
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])
    near_a_new_digit = {*range(1, 13), *range(95, 106), *range(995, 1006)}
    for step in range(1, 1006):
        logger.rows = 3 * step
        if step in near_a_new_digit:
            torch.save({"global_step": step}, callback.pending)  # what Lightning writes before the commit
        else:
            callback.pending.write_bytes(b"checkpoint")
        callback._uncommitted = step
        callback._commit(trainer)
        positions = load_positions(tmp_path)
        assert sorted(map(int, positions)) == list(range(max(1, step - KEEP_POSITIONS + 1), step + 1)), step
        assert positions[str(step)] == {"csv": {"rows": 3 * step}}
        if step in near_a_new_digit:
            state = read_checkpoint_state(callback.path)  # what a resume from last.ckpt reads
            assert state == {"step": step, "logs": {"csv": {"rows": 3 * step}}}, step
    assert not callback.pending.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", POSITIONS_FILE]


def test_positions_of_a_run_that_starts_in_the_middle_keep_what_was_there(tmp_path):
    """A resumed run appends to the positions the killed one left (steps 7..10 here) and prunes them in order."""
    callback = ResumeCheckpoint(tmp_path, every=1)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[CountingLogger()])
    for step in (7, 8, 9, 10, 11, 12, 98, 99, 100, 101, 102):
        callback.pending.write_bytes(b"x")
        callback._uncommitted = step
        callback._commit(trainer)
    assert sorted(map(int, load_positions(tmp_path))) == [99, 100, 101, 102]


def test_only_rank_zero_commits(tmp_path):
    callback = ResumeCheckpoint(tmp_path, every=1)
    callback.pending.write_bytes(b"x")
    callback._uncommitted = 5
    callback._commit(SimpleNamespace(is_global_zero=False, loggers=[CountingLogger()]))
    assert load_positions(tmp_path) == {} and not callback.path.exists()


def test_checkpoint_state_of_a_file_without_a_step_and_of_a_file_that_is_no_checkpoint(tmp_path):
    torch.save({}, tmp_path / "empty.ckpt")
    assert read_checkpoint_state(tmp_path / "empty.ckpt") == {"step": 0, "logs": None}
    (tmp_path / "junk.ckpt").write_text("not a checkpoint\nsecond line")
    with pytest.raises(ValueError) as err:
        read_checkpoint_state(tmp_path / "junk.ckpt")
    message = str(err.value)
    assert str(tmp_path / "junk.ckpt") in message and "\n" not in message and "(None)" not in message
    try:
        torch.load(tmp_path / "junk.ckpt", map_location="cpu", mmap=True, weights_only=True)
    except Exception as raw:  # noqa: BLE001 - the loader's own first line is the reason given
        assert str(raw).strip().splitlines()[0][:200] in message
    assert read_checkpoint_state(tmp_path) is None  # a DeepSpeed checkpoint directory


def test_checkpoint_step_of_a_checkpoint_and_none_for_a_missing_unreadable_or_directory_checkpoint(tmp_path):
    """What an interrupted run's hint says it resumes from (None: 'step 0 (no resume checkpoint yet)')."""
    torch.save({"global_step": 7}, tmp_path / "last.ckpt")
    assert checkpoint_step(tmp_path / "last.ckpt") == 7
    assert checkpoint_step(tmp_path / "missing.ckpt") is None
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    assert checkpoint_step(tmp_path / "junk.ckpt") is None
    (tmp_path / "deepspeed.ckpt").mkdir()  # a DeepSpeed checkpoint directory: no state read
    assert checkpoint_step(tmp_path / "deepspeed.ckpt") is None


def _as_if_written_on_a_gpu(path: Path) -> None:
    """Rewrite a CPU checkpoint as a GPU run's (its tensors' storage location ``cuda:0``, as ``torch.save`` records it
    in ``data.pkl``), so that a CPU-only machine can only read it mapped to the CPU."""
    import zipfile

    with zipfile.ZipFile(path) as zin:
        entries = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                assert data.count(b"X\x03\x00\x00\x00cpu") == 1
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            out.writestr(name, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU reads a GPU checkpoint without mapping")
def test_a_checkpoint_written_on_a_gpu_gives_its_step_and_positions_on_a_cpu_only_machine(tmp_path):
    """Resume bookkeeping (the step of ``last.ckpt`` and its log positions) reads a checkpoint written by a GPU run
    on a machine without one (``make test`` here, a login node): the tensors are mapped to the CPU, not restored."""
    torch.save({"global_step": 12, "state_dict": {"w": torch.ones(3)}}, tmp_path / "last.ckpt")
    _as_if_written_on_a_gpu(tmp_path / "last.ckpt")
    with pytest.raises(RuntimeError, match="CUDA"):  # what reading it unmapped does here
        torch.load(tmp_path / "last.ckpt", mmap=True, weights_only=True)
    (tmp_path / POSITIONS_FILE).write_text(json.dumps({"12": {"csv": 4}}))
    assert read_checkpoint_state(tmp_path / "last.ckpt") == {"step": 12, "logs": {"csv": 4}}


def test_a_checkpoint_directory_replaces_the_old_one_whole(tmp_path):
    """DeepSpeed checkpoints are directories: the new one takes the old one's place, nothing of the old is left."""
    final, pending = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.pending"
    final.mkdir()
    (final / "old_shard").write_text("old")
    pending.mkdir()
    (pending / "new_shard").write_text("new")
    _replace(pending, final)
    assert sorted(p.name for p in final.iterdir()) == ["new_shard"] and (final / "new_shard").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    (tmp_path / ".last.ckpt.old").mkdir()  # left by a replace killed between its renames
    (tmp_path / ".last.ckpt.old" / "older_shard").write_text("older")
    pending.mkdir()
    (pending / "newer_shard").write_text("newer")
    _replace(pending, final)
    assert sorted(p.name for p in final.iterdir()) == ["newer_shard"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    (tmp_path / "file.pending").write_text("2")
    (tmp_path / "file").write_text("1")
    _replace(tmp_path / "file.pending", tmp_path / "file")
    assert (tmp_path / "file").read_text() == "2" and not (tmp_path / "file.pending").exists()


def test_an_old_checkpoint_directory_that_cannot_be_removed_yet_does_not_fail_the_commit(tmp_path, monkeypatch):
    """On NFS a directory holding a file still open elsewhere (a reader of the old checkpoint) cannot be removed yet: the
    new checkpoint is in place all the same, and the next replace removes what was left."""
    final, pending, old = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.pending", tmp_path / ".last.ckpt.old"
    final.mkdir()
    (final / "old_shard").write_text("old")
    pending.mkdir()
    (pending / "new_shard").write_text("new")
    rmdir = os.rmdir

    def busy(path, *args, **kwargs):
        if Path(path) == old:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        return rmdir(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "rmdir", busy)
        _replace(pending, final)
    assert sorted(p.name for p in final.iterdir()) == ["new_shard"] and old.exists()
    pending.mkdir()
    (pending / "newer_shard").write_text("newer")
    _replace(pending, final)
    assert sorted(p.name for p in final.iterdir()) == ["newer_shard"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_a_run_killed_after_pruning_and_after_step_100_resumes_exactly(tmp_path, monkeypatch):
    """The kill-test run (resume checkpoints every 3 steps) made 105 steps long: 35 resume checkpoints, pruned
    from step 15 on; Ctrl-C at the start of batches 17 and 103 (each saves a resume checkpoint at the step it reached), each after rows were logged past it (so
    the resume must cut every log back to the positions recorded under its step)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tests.kill_resume as kill_resume

    steps = 105
    original = kill_resume.kill_config

    def longer(root, devices=1, loggers=("csv", "tensorboard")):
        path = original(root, devices, loggers)
        cfg = yaml.safe_load(path.read_text())
        cfg["trainer"]["max_steps"] = steps
        cfg["checkpoints"]["every"] = 35  # HF checkpoints (and their measurements) at 0, 35, 70, 105 only
        path.write_text(yaml.safe_dump(cfg))
        return path

    monkeypatch.setattr(kill_resume, "kill_config", longer)
    assert kill_resume.RESUME_EVERY == 3
    kills = [kill_resume.Kill.parse(k) for k in ("17:batch_start:INT", "103:batch_start:INT")]
    problems = kill_resume.kill_test(tmp_path, kills)
    assert problems == []
    run = tmp_path / "killed" / "runs" / "tiny" / "lightning"
    # every 3 steps, plus the checkpoint the interrupt wrote at the step it reached (104): the newest 4 are kept
    assert sorted(map(int, load_positions(run))) == [99, 102, 104, 105]
    assert read_checkpoint_state(run / "last.ckpt")["step"] == steps


class RanksStrategy:
    """The other ranks' signal flags, reduced as Lightning's ``Strategy.reduce_boolean_decision`` documents it:
    ``all=True`` (its default) only if every rank decided so, ``all=False`` if any did."""

    def __init__(self, others: list[bool]):
        self.others = others

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 - Lightning's name
        votes = [bool(decision), *self.others]
        return builtins.all(votes) if all else any(votes)


@pytest.mark.parametrize("here, others, stops", [
    (False, [], False), (True, [], True),  # one process
    (False, [False], False), (False, [True], True), (False, [False, False], False), (False, [False, True], True), (True, [False, False], True), (True, [True, True], True),
])
def test_a_signal_on_any_rank_stops_every_rank_after_the_same_step_with_its_checkpoint(tmp_path, monkeypatch, here,
                                                                                      others, stops):
    """Under DDP a signal reaches the ranks at different times: every rank stops after the first step at which any
    rank has it (each rank checkpoints that step and exits after committing it); without one, a step off the
    checkpoint schedule writes nothing."""
    callback = ResumeCheckpoint(tmp_path, every=100)
    saved = []
    monkeypatch.setattr(callback, "_save_last_checkpoint", lambda trainer, candidates: saved.append(trainer.global_step))
    monkeypatch.setattr(callback, "_monitor_candidates", lambda trainer: {})
    callback._signals.requested = 15 if here else None
    trainer = SimpleNamespace(global_step=7, accumulate_grad_batches=1, world_size=1 + len(others), max_steps=1000,
                              strategy=RanksStrategy(others))
    callback.on_train_batch_end(trainer, None, None, None, 6)
    assert saved == ([7] if stops else []) and callback._stop_after_commit is stops
    assert callback._uncommitted == (7 if stops else None)
