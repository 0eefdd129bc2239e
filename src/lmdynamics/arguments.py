"""Command-line and config-file errors of the jsonargparse parsers of every lmdynamics command, as one line."""

from __future__ import annotations

import re
from collections.abc import Iterable


def error_line(err: BaseException, argv: list[str], known: Iterable[str], what: str = "config") -> str:
    """jsonargparse's error as one line for people: an unknown key names the file and lists the known keys, a
    missing config file points to ``lmdynamics configs``."""
    text = " ".join(str(err).split())
    m = re.search(r"Option '([\w.]+)' is not accepted", text) or re.search(r'Key "([\w.]+)" is not expected', text)
    if m:
        where = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), "the arguments")
        return f"unknown key(s) ['{m.group(1)}'] in {where}; known keys: {sorted(known)}"
    m = re.search(r"File does not exist: '?([^']+)'?", text)
    if m:
        return f"{what} {m.group(1)} does not exist; the bundled configs are in configs/ (list them with: lmdynamics configs)"
    return text.removeprefix("Parser key ").replace('"', "")
