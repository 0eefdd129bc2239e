"""Atomic file writes for everything the package writes (tables, checkpoints metadata, probes, figures).

Every file goes to a hidden temporary name in the target directory first and is then
renamed into place (``os.replace`` is atomic on one file system), so a killed process never leaves a
half-written file under the final name.

Files get the mode the process's umask gives a new file (0644 under umask 022), whatever the writer used:
some writers (safetensors) create their file 0600, which would hide a run from the rest of its group.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        apply_umask(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def umask() -> int:
    """The process's file-creation mask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or every file under a directory) the mode a new file gets: 0o666 minus the umask."""
    path = Path(path)
    mode = 0o666 & ~umask()
    for file in (p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []:
        os.chmod(file, mode)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    import json

    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``out``; on success move every file written there into ``out`` (each
    one atomically, replacing files of the same name), on error leave ``out`` untouched. The stage is always
    removed, so a crash or bad input leaves no half-written folder."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    stage.mkdir()
    try:
        yield stage
        apply_umask(stage)
        for src in sorted(stage.rglob("*")):
            if src.is_file():
                target = out / src.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
