"""Whether the Hugging Face hub can be reached, asked once before a command starts work that needs it.

Without this check an unreachable hub shows up late and noisily: ``huggingface_hub`` retries every file
with back-off (minutes of "Retrying in 8s" lines per file), and the command may already have written
output. :func:`require_hub` instead tries one connection to the hub's endpoint (``HF_ENDPOINT``, default
https://huggingface.co) with a short timeout and, when it fails, raises one line naming what the command
needed from the hub and the offline alternative. With ``HF_HUB_OFFLINE=1`` nothing is asked: files come
from the local cache only, so the check is then whether each hub model and dataset is in the local cache, and
the same one line names those that are not.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse


RUN_ROOT = "runs"  # training's default run.root: ``runs/NAME`` is a run directory, never a hub repo


class HubUnreachable(ValueError):
    """The hub is needed and cannot be reached; the message is one line for the user."""


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value: use the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def unreachable_reason(timeout: float = 5.0) -> str | None:
    """None if a TCP connection to the hub endpoint opens within ``timeout`` seconds, else why not."""
    url = urlparse(endpoint())
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}" if getattr(err, "strerror", None) else f"{type(err).__name__}: {err}"


def is_hub_id(spec: str | os.PathLike | None) -> bool:
    """A model, dataset or tokenizer spec that would be fetched from the hub: ``name`` or ``Org/name``, not an
    existing path, not written as a path (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.json``) and not under an
    existing local directory or ``runs/`` (``runs/demo`` is a run that is missing, not a repo)."""
    if spec is None or str(spec) == "":
        return False
    text = str(spec)
    path = Path(text)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        return False
    if path.suffix in {".json", ".txt", ".md", ".jsonl", ".parquet", ".safetensors"}:
        return False
    return not (len(path.parts) == 2 and (Path(path.parts[0]).is_dir() or path.parts[0] == RUN_ROOT))


def require_hub(needs: list[str], alternative: str, timeout: float = 5.0) -> None:
    """Raise :class:`HubUnreachable` (one line) when ``needs`` (``"model X"``, ``"dataset Y"``) is not empty,
    ``HF_HUB_OFFLINE`` is not set and the hub endpoint cannot be reached. ``alternative`` says what to run
    instead without the hub."""
    if not needs:
        return
    if offline():
        missing = [need for need in needs if not in_local_cache(need)]
        if missing:
            raise HubUnreachable(
                f"HF_HUB_OFFLINE is set and the local Hugging Face cache has no {_listed(missing)}; {alternative}; "
                "or download them first (unset HF_HUB_OFFLINE where the hub can be reached)")
        return
    reason = unreachable_reason(timeout)
    if reason is None:
        return
    raise HubUnreachable(
        f"the Hugging Face hub ({endpoint()}) cannot be reached ({reason}), and this needs it for {_listed(needs)}; "
        f"{alternative}; or, with those files already in the local Hugging Face cache, set HF_HUB_OFFLINE=1"
    )


def _listed(needs: list[str], shown: int = 8) -> str:
    return ", ".join(needs[:shown]) + (f" and {len(needs) - shown} more" if len(needs) > shown else "")


def in_local_cache(need: str) -> bool:
    """Whether a need of :func:`require_hub` (``"model Org/name"``, ``"probe dataset Org/name"``, ``"tokenizer X"``)
    has a copy in the local cache: its repo folder in the hub cache (``HF_HUB_CACHE``) holding a snapshot, or, for a
    dataset, a prepared copy in the ``datasets`` cache (``HF_DATASETS_CACHE``)."""
    from huggingface_hub import constants

    *kind, repo = need.split()
    repo = repo.split("@")[0]
    dataset = "dataset" in kind
    folder = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE) / (
        f"{'datasets' if dataset else 'models'}--{repo.replace('/', '--')}")
    if any((folder / "snapshots").glob("*/*")):
        return True
    if dataset:
        home = os.environ.get("HF_HOME") or str(Path(constants.HF_HOME))
        datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(home) / "datasets")
        return any(datasets_cache.glob(f"{repo.replace('/', '___')}*"))
    return False
