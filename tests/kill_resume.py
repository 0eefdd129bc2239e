"""Kill test: training runs of the real CLI are killed (SIGKILL, SIGINT, SIGTERM) and resumed with ``--ckpt_path last``
until they finish, then compared with an uninterrupted run of the same config.

Must be identical: the token ids and loss of every micro-batch (in every attempt: a redone batch is the
same batch), the epoch of every batch (no spurious epoch), the validation points and losses, every HF
checkpoint's weights, every row of ``csv/metrics.csv``, every row of the tidy table as a plain
``pandas.read_parquet`` sees it, and every TensorBoard scalar; no row lost or duplicated. Only wall-time
values (throughput, measuring time) are left out of the comparison.

A kill point is ``STEP:WHERE:SIGNAL``: WHERE is where the run is stopped (see ``PauseAt``: batch_start,
mid_accumulation, batch_end, validation) or ``anytime`` (after STEP further micro-batches of that attempt,
wherever the process then is); SIGNAL is KILL, INT (Ctrl-C) or TERM (a scheduler's end of job). The signal
goes to the whole process group, from outside, as a terminal or a scheduler sends it. After INT and TERM the run
must have checkpointed the step it reached (not only the last scheduled checkpoint) and printed the command
that resumes it; with ``printed_resume`` the next attempt runs that command as printed, in a new shell
(``bash -c``, another working directory, no venv on PATH).

    python tests/kill_resume.py --kills 4 --seed 7       # random kill points (the seed is printed)
    python tests/kill_resume.py --kill 3:batch_end:KILL --kill 6:validation:INT
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.helpers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmdynamics.training.module import WALL_CLOCK_VALUES  # noqa: E402
from tests.helpers.cli import cli_env, start_cli, tiny_config  # noqa: E402

MAX_STEPS = 12
ACCUMULATE = 2
RESUME_EVERY = 3
VAL_EVERY_STEPS = 2
WHERE = ("batch_start", "mid_accumulation", "batch_end", "validation", "anytime")
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
WALL_TIME_COLUMNS = {*WALL_CLOCK_VALUES, "measure_seconds"}  # throughput and timing: not reproducible
CALLBACKS = "tests.helpers.callbacks"
HANG_SECONDS = 600  # an attempt takes seconds; only a hung one gets near this


@dataclass(frozen=True)
class Kill:
    step: int
    where: str
    signal: str

    @classmethod
    def parse(cls, text: str) -> Kill:
        step, where, sig = text.split(":")
        if where not in WHERE or sig not in SIGNALS:
            raise ValueError(f"kill point {text!r}: WHERE must be one of {WHERE}, SIGNAL one of {sorted(SIGNALS)}")
        return cls(int(step), where, sig)

    def __str__(self) -> str:
        return f"{self.step}:{self.where}:{self.signal}"


def kill_config(root: Path, devices: int = 1, loggers=("csv", "tensorboard")) -> Path:
    """The tiny run of the tests with accumulation, resume checkpoints every 3 steps, validation every 2."""
    batch = 4 // devices
    return tiny_config(root, **{
        "trainer.max_steps": MAX_STEPS, "trainer.devices": devices,
        "trainer.val_check_interval": VAL_EVERY_STEPS * ACCUMULATE,  # counted in micro-batches
        "run.resume_every": RESUME_EVERY, "run.loggers": list(loggers),
        "data.batch_size": batch, "data.global_batch_size": 4 * ACCUMULATE,
        "checkpoints.every": 4, "probe.num_sequences": 8,
    })


def random_kills(rng: random.Random, n: int) -> list[Kill]:
    """n kill points at increasing steps two or more apart (each is reached: a resume starts at or before the
    last kill's step, or one step after it when INT/TERM stopped the run after its step)."""
    steps = [s + i for i, s in enumerate(sorted(rng.sample(range(1, MAX_STEPS - n), n)))]
    stop = rng.choice(["INT", "TERM"])
    signals = ["KILL", stop] if rng.random() < 0.5 else [stop, "KILL"]
    kills = []
    for i, step in enumerate(steps):
        where = rng.choice(WHERE if step % VAL_EVERY_STEPS == 0 else [w for w in WHERE if w != "validation"])
        kills.append(Kill(rng.randint(1, 4) if where == "anytime" else step, where, signals[i % 2]))
    return kills


# ---------------------------------------------------------------------------------------------- running
def attempt(cfg: Path, record: Path, logs: Path, resume: bool, kill: Kill | None, env_extra=None,
            command: str | None = None) -> list[str]:
    """One invocation of ``train/run.py fit`` (or of ``command``, a printed resume command, run in a new shell);
    returns problems (an unexpected exit, a kill point never reached, no checkpoint at the step reached)."""
    extra = [f"--trainer.callbacks+={CALLBACKS}.BatchRecorder", "--trainer.callbacks.path", str(record)]
    args = ["fit", "--config", str(cfg), *extra]
    if resume:
        args += ["--ckpt_path", "last"]
    marker = logs / "paused"
    marker.unlink(missing_ok=True)
    if kill is not None and kill.where != "anytime":
        pause = [f"--trainer.callbacks+={CALLBACKS}.PauseAt", "--trainer.callbacks.step", str(kill.step),
                 "--trainer.callbacks.where", kill.where, "--trainer.callbacks.marker", str(marker)]
        args, extra = args + pause, extra + pause
    lines_before = _count_batches(record)
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        if command is None:
            proc = start_cli(*args, stdout=out, stderr=err, env_extra=env_extra)
        else:
            proc = start_shell(f"{command} {shlex.join(extra)}", stdout=out, stderr=err, env_extra=env_extra)
        signalled = False
        deadline = time.monotonic() + HANG_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            due = kill is not None and not signalled and (
                marker.exists() if kill.where != "anytime" else _count_batches(record) - lines_before >= kill.step)
            if due:
                os.killpg(proc.pid, SIGNALS[kill.signal])
                signalled = True
            time.sleep(0.01)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # hung: dump every rank's stacks into the log before killing it
            code = None
            os.killpg(proc.pid, signal.SIGUSR1)
            time.sleep(3)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # strays (a DDP rank) must not outlive the attempt
            except ProcessLookupError:
                pass
    stderr = (logs / "stderr").read_text()
    label = f"attempt {'resumed' if resume else 'fresh'} kill={kill}"
    if code is None:
        return [f"{label}: still running after {HANG_SECONDS} s (hung?); stacks: {stderr[-3000:]}"]
    if kill is None or not signalled:
        if code != 0:
            return [f"{label}: exit {code}: {stderr[-1500:]}"]
        return [] if kill is None or kill.where == "anytime" else [f"{label}: the kill point was never reached"]
    if kill.signal == "KILL" and code != -signal.SIGKILL:
        return [f"{label}: exit {code} after SIGKILL: {stderr[-1500:]}"]
    if kill.signal in ("INT", "TERM"):
        expected = 128 + SIGNALS[kill.signal]
        problems = [] if code == expected else [f"{label}: exit {code} after SIG{kill.signal} (expected {expected})"]
        hint = resume_hint_of(stderr)
        if hint is None:
            return problems + [f"{label}: no resume command printed after SIG{kill.signal}: {stderr[-800:]}"]
        reached, saved, _ = hint
        if saved != reached or (kill.where != "anytime" and reached < kill.step):
            problems.append(f"{label}: interrupted at step {reached}, but the resume checkpoint is at step {saved}")
        return problems
    return []


HINT = re.compile(r"interrupted at step (\d+); resume from step (\d+).* with: (.+)$", re.M)


def resume_hint_of(stderr: str) -> tuple[int, int, str] | None:
    """(step reached, step of the resume checkpoint, the resume command) from an interrupted run's stderr."""
    found = HINT.findall(stderr)
    return (int(found[-1][0]), int(found[-1][1]), found[-1][2].strip()) if found else None


def start_shell(command: str, stdout, stderr, env_extra=None) -> subprocess.Popen:
    """``command`` as a user pastes it into a new shell: another working directory, no venv activated, a
    minimal PATH (this checkout's sources stay first on PYTHONPATH: the venv's editable install may be another's)."""
    env = {k: v for k, v in cli_env(env_extra).items() if k not in ("VIRTUAL_ENV", "PATH")}
    env["PATH"] = "/usr/bin:/bin"
    return subprocess.Popen(["bash", "-c", command], stdout=stdout, stderr=stderr, env=env, cwd=tempfile.gettempdir(),
                            start_new_session=True)


def _count_batches(record: Path) -> int:
    if not record.is_file():
        return 0
    return sum(1 for line in record.read_text().splitlines() if '"kind": "batch"' in line)


def train_with_kills(workdir: Path, kills: list[Kill], devices: int = 1, env_extra=None,
                     printed_resume: bool = False) -> tuple[Path, Path, list[str]]:
    """Start a run in ``workdir``, kill it at each point in turn, resume it to the end; (run dir, record, problems).
    ``printed_resume``: after INT/TERM, resume with the command the run printed, in a new shell."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = kill_config(workdir, devices=devices)
    record = workdir / "batches.jsonl"
    problems = []
    command = None
    for i, kill in enumerate([*kills, None]):
        logs = workdir / f"attempt{i}"
        logs.mkdir(exist_ok=True)
        problems += attempt(cfg, record, logs, resume=i > 0, kill=kill, env_extra=env_extra, command=command)
        if problems:
            break
        hint = resume_hint_of((logs / "stderr").read_text()) if printed_resume else None
        command = hint[2] if hint else None
    return workdir / "runs" / "tiny", record, problems


# ---------------------------------------------------------------------------------------------- comparing
def compare(base_run: Path, base_record: Path, run: Path, record: Path) -> list[str]:
    """Everything the killed-and-resumed run logged against the uninterrupted run; returns the differences."""
    return [*_compare_batches(base_record, record), *compare_outputs(base_run, run)]


def compare_outputs(base_run: Path, run: Path) -> list[str]:
    """A resumed run directory's outputs (HF checkpoints, CSV, tidy table, TensorBoard) against the uninterrupted one's."""
    return [*_compare_checkpoints(base_run, run), *_compare_csv(base_run, run), *_compare_table(base_run, run),
            *_compare_tensorboard(base_run, run)]


def _records(path: Path) -> tuple[dict, dict, list[str]]:
    """(batch key -> record, validation key -> val_loss, problems): every attempt's record of a key must agree."""
    batches, vals, problems = {}, {}, []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "batch":
            key, value = (row["step"], row["micro"], row["rank"]), (row["batch_idx"], row["epoch"], row["ids"], row["loss"])
            store = batches
        else:
            key, value, store = (row["step"], row["rank"]), row["val_loss"], vals
        if key in store and store[key] != value:
            problems.append(f"{key}: a redone {row['kind']} differs from its first run")
        store[key] = value
    return batches, vals, problems


def _compare_batches(base_record: Path, record: Path) -> list[str]:
    base_b, base_v, _ = _records(base_record)
    got_b, got_v, problems = _records(record)
    if sorted(got_b) != sorted(base_b):
        problems.append(f"micro-batches seen: {sorted(set(got_b) ^ set(base_b))[:6]} differ from the uninterrupted run's")
    for key in sorted(set(base_b) & set(got_b)):
        (b_idx, b_epoch, b_ids, b_loss), (idx, epoch, ids, loss) = base_b[key], got_b[key]
        if ids != b_ids:
            problems.append(f"step {key[0]} micro-batch {key[1]} rank {key[2]}: other token ids than the uninterrupted run")
        elif loss != b_loss:
            problems.append(f"step {key[0]} micro-batch {key[1]}: loss {float.fromhex(loss)} != {float.fromhex(b_loss)}")
        if (idx, epoch) != (b_idx, b_epoch):
            problems.append(f"step {key[0]} micro-batch {key[1]}: batch_idx/epoch {(idx, epoch)} != {(b_idx, b_epoch)}")
    if got_v != base_v:
        problems.append(f"validation points {sorted(got_v.items())} != uninterrupted {sorted(base_v.items())}")
    return problems


def _compare_checkpoints(base_run: Path, run: Path) -> list[str]:
    from safetensors.torch import load_file

    names = sorted(p.name for p in (base_run / "checkpoints").iterdir())
    got = sorted(p.name for p in (run / "checkpoints").iterdir()) if (run / "checkpoints").is_dir() else []
    if got != names:
        return [f"HF checkpoints {got} != {names}"]
    problems = []
    for name in names:
        a, b = load_file(base_run / "checkpoints" / name / "model.safetensors"), load_file(run / "checkpoints" / name / "model.safetensors")
        if a.keys() != b.keys() or any(not a[k].equal(b[k]) for k in a):
            problems.append(f"checkpoint {name}: weights differ")
    return problems


def _csv_rows(run: Path) -> tuple[list[str], list[tuple]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c for c in reader.fieldnames if c not in WALL_TIME_COLUMNS]
        return columns, [tuple(row[c] for c in columns) for row in reader]


def _compare_csv(base_run: Path, run: Path) -> list[str]:
    (base_cols, base_rows), (cols, rows) = _csv_rows(base_run), _csv_rows(run)
    if cols != base_cols:
        return [f"csv columns differ: {sorted(set(cols) ^ set(base_cols))}"]
    if rows == base_rows:
        return []
    missing = [r for r in base_rows if r not in rows]
    extra = len(rows) - len(base_rows)
    return [f"csv: {len(rows)} rows vs {len(base_rows)} uninterrupted; {len(missing)} missing, {extra:+d} rows"]


def _compare_table(base_run: Path, run: Path) -> list[str]:
    import pandas as pd

    from lmdynamics import store

    key = list(store.KEY)
    problems = []
    frames = []
    for r in (base_run, run):
        frame = pd.read_parquet(store.table_path(r))  # what any reader sees: no de-duplication
        if frame.duplicated(subset=key).any():
            problems.append(f"{r}: {int(frame.duplicated(subset=key).sum())} duplicate rows in the tidy table")
        frames.append(frame[~frame.metric.isin(WALL_TIME_COLUMNS)].sort_values(key).reset_index(drop=True))
    base, got = frames
    if len(got) != len(base) or not base[key + ["tokens"]].equals(got[key + ["tokens"]]):
        merged = base.merge(got, on=key, how="outer", indicator=True)
        return problems + [f"tidy table: {len(got)} rows vs {len(base)} uninterrupted; only in one: "
                           f"{merged[merged._merge != 'both'][key].head(4).to_dict('records')}"]
    same = (base.value == got.value) | (base.value.isna() & got.value.isna())
    if not same.all():
        problems.append(f"tidy table: {int((~same).sum())} values differ, e.g. {got[~same][key].head(3).to_dict('records')}")
    return problems


def _tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if tag.split("/")[0] not in WALL_TIME_COLUMNS}


def _compare_tensorboard(base_run: Path, run: Path) -> list[str]:
    if not (base_run / "tensorboard").is_dir():
        return []
    base, got = _tensorboard_scalars(base_run), _tensorboard_scalars(run)
    if set(base) != set(got):
        return [f"tensorboard tags differ: {sorted(set(base) ^ set(got))[:5]}"]
    bad = [t for t in base if [(s, v if not math.isnan(v) else "nan") for s, v in base[t]]
           != [(s, v if not math.isnan(v) else "nan") for s, v in got[t]]]
    return [f"tensorboard: {len(bad)} tags differ, e.g. {bad[0]}: {got[bad[0]][:6]} vs {base[bad[0]][:6]}"] if bad else []


# ---------------------------------------------------------------------------------------------- driver
def kill_test(workdir: Path, kills: list[Kill], devices: int = 1, env_extra=None, baseline: Path | None = None,
              printed_resume: bool = False) -> list[str]:
    """Uninterrupted run (or ``baseline``, a workdir of an earlier one) vs the same run killed at ``kills``."""
    if baseline is None:
        baseline = workdir / "uninterrupted"
        _, _, problems = train_with_kills(baseline, [], devices, env_extra)
        if problems:
            return problems
    run, record, problems = train_with_kills(workdir / "killed", kills, devices, env_extra, printed_resume)
    if problems:
        return problems
    return compare(baseline / "runs" / "tiny", baseline / "batches.jsonl", run, record)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--kills", type=int, default=4, help="number of random kill points")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random kill points (default: random)")
    ap.add_argument("--kill", action="append", type=Kill.parse, help="an explicit kill point STEP:WHERE:SIGNAL (repeatable)")
    ap.add_argument("--devices", type=int, default=1, help="DDP processes (gloo on CPU)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    kills = args.kill or random_kills(random.Random(seed), args.kills)
    print(f"kill test: seed {seed}, kill points {' '.join(map(str, kills))}", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kill-resume-"))
    start = time.monotonic()
    problems = kill_test(workdir, kills, devices=args.devices)
    if problems:
        print(f"FAILED (runs kept in {workdir}):\n  " + "\n  ".join(problems), flush=True)
        return 1
    print(f"ok: {len(kills)} kills, every logged value identical to the uninterrupted run ({time.monotonic() - start:.0f}s)")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
