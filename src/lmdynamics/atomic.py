"""Atomic file writes for everything the package writes (tables, checkpoints metadata, probes, figures).

Every file goes to a hidden temporary name in the target directory first and is then
renamed into place (``os.replace`` is atomic on one file system), so a killed process never leaves a
half-written file under the final name.
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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    import json

    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))
