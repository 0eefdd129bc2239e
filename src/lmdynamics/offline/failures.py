"""Failures of an offline analysis: one line each on the console, one file each under ``<out>/failures/``.

A failure file carries the invocation's id, so the closing summary lists what failed in this invocation
on any rank; a unit that succeeds later removes its file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmdynamics.atomic import write_text_atomic
from lmdynamics.checkpoints import CheckpointError, CorruptCheckpointError
from lmdynamics.layout import slug


@dataclass
class Failure:
    run: str
    model: str
    step: int
    kind: str
    error: str

    def line(self) -> str:
        where = f"{self.model} step {self.step}" if self.step >= 0 else self.model
        return f"FAILED {where} ({self.kind}): {self.error}"


class FailureLog:
    """The failure files of one output directory for one invocation."""

    def __init__(self, out: Path, invocation: str = ""):
        self.dir = Path(out) / "failures"
        self.invocation = invocation

    def path(self, run: str, step: int, kind: str) -> Path:
        return self.dir / f"{slug(run)}__step{step}__{kind}.json"

    def write(self, failure: Failure) -> None:
        write_text_atomic(self.path(failure.run, failure.step, failure.kind),
                          json.dumps({**failure.__dict__, "invocation": self.invocation}))

    def clear(self, run: str, step: int, kind: str) -> None:
        self.path(run, step, kind).unlink(missing_ok=True)

    def this_invocation(self) -> list[dict]:
        """The failure records written in this invocation by any rank."""
        records = []
        for f in sorted(self.dir.glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("invocation") == self.invocation:
                records.append(rec)
        return records


def one_line(err: BaseException | str) -> str:
    """An error as the one line a failure shows (the type named when it is not one of ours)."""
    msg = err if isinstance(err, str) else (str(err).splitlines()[0] if str(err) else type(err).__name__)
    if not isinstance(err, (str, CheckpointError, ValueError, FileNotFoundError)):
        msg = f"{type(err).__name__}: {msg}"
    return msg


def with_fix(err: BaseException, source, step: int) -> BaseException:
    """A corrupt file's error with the fix that fits its source (a run's checkpoint cannot be downloaded)."""
    if isinstance(err, CorruptCheckpointError):
        return CheckpointError(err.with_fix(source.repair_hint(step)))
    return err
